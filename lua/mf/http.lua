-- mf.http helpers on top of mf.http.request (the one C call), as
-- lua-resty-core builds its helpers on C primitives.
local mf = require "mf"

local http = mf.http

-- The options table to send: opts (or a new table) with the given fields.
local function with(opts, fields)
  local o = {}
  if type(opts) == "table" then
    for k, v in pairs(opts) do o[k] = v end
  end
  for k, v in pairs(fields) do o[k] = v end
  return o
end

-- mf.http.get(url [, opts]): a GET; the same results as mf.http.request.
function http.get(url, opts)
  if type(url) ~= "string" then
    error("mf.http.get: url is required", 2)
  end
  return http.request(with(opts, { url = url, method = "GET" }))
end

-- mf.http.post(url, body [, opts]): a POST; a table body is sent as JSON.
function http.post(url, body, opts)
  if type(url) ~= "string" then
    error("mf.http.post: url is required", 2)
  end
  return http.request(with(opts, { url = url, body = body, method = "POST" }))
end

return http
