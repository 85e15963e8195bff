-- A Lua on_route stage for the benchmark: keyword routing, as users write.
local mf = require "mf"
local M = { name = "bench-route", version = "1.0.0" }
function M.on_route(conf, ctx)
  local text = mf.req.last_user_text():lower()
  if text:find("code", 1, true) then return mf.route.set_model("gpt-4.1") end
  ctx.routed = true
end
return M
