-- For the scrape benchmark: GET /fill?n=10000 on the status listener
-- makes n label sets of one counter (the registry's cap raised for it).
local mf = require "mf"
local M = { name = "bench-series", version = "1.0.0" }
local c = mf.metrics.counter("bench_series_total", "Label sets for the scrape benchmark",
  { "model", "consumer" }, { max_series = 20000 })
mf.endpoint.add{ listener = "status", method = "GET", path = "/fill", handler = function()
  local n = tonumber(mf.req.query():match("n=(%d+)")) or 10000
  for i = 1, n do c:inc({ "model-" .. (i % 100), "consumer-" .. i }) end
  return 200, tostring(n) .. "\n", { ["content-type"] = "text/plain" }
end }
return M
