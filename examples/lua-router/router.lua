-- router.lua: routes `model: auto` by keywords in the last user message.
-- config: { default_model = "...", intents = { name = { words = {...}, model = "..." } } }
local mf = require "mf"

local M = { name = "lua-router", version = "1.0.0" }

function M.on_route(conf, ctx)
  if mf.req.model() ~= "auto" then return end
  local text = mf.req.last_user_text():lower()
  for intent, rule in pairs(conf.intents or {}) do
    for _, word in ipairs(rule.words or {}) do
      if text:find(word:lower(), 1, true) then
        ctx.intent = intent
        local ok, err = mf.route.set_model(rule.model)
        if not ok then return 503, err end
        return
      end
    end
  end
  ctx.intent = "default"
  local ok, err = mf.route.set_model(conf.default_model)
  if not ok then return 503, err end
end

function M.on_response_headers(conf, ctx)
  if ctx.intent then mf.resp.set_header("x-intent", ctx.intent) end
end

return M
