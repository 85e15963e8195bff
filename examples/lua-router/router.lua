-- router.lua: routes `model: auto` by what the user asks, with the helper
-- library (lua/mf): the intent whose words best match the last user
-- message (BM25 over each intent's word list, whole words, rare words
-- weigh more), else `default_model`; with `sticky_ttl_ms`, the first
-- decision of a conversation is kept for its later turns (mf.sticky).
-- config: { default_model = "...", sticky_ttl_ms = 0,
--           intents = { name = { words = {...}, model = "..." } } }
-- For rules on headers, consumers and token counts, embedding
-- similarity and an LLM classifier, see lua/stages/intent-router.lua.
local mf = require "mf"

local M = { name = "lua-router", version = "2.0.0" }

local indexes = setmetatable({}, { __mode = "k" }) -- conf -> BM25 index

-- Checks the config once per worker when the stage loads: a bad one
-- refuses the start (or the reload) with the reason.
function M.init(conf)
  if type(conf.default_model) ~= "string" then
    return nil, "default_model (a model name) is required"
  end
  local docs = {}
  for name, rule in pairs(conf.intents or {}) do
    if type(rule) ~= "table" or type(rule.model) ~= "string" or type(rule.words) ~= "table" then
      return nil, ("intents.%s needs words (a list) and model"):format(name)
    end
    docs[name] = table.concat(rule.words, " ")
  end
  indexes[conf] = mf.text.bm25(docs)
  return true
end

local function decide(conf)
  local intent = indexes[conf]:best(mf.req.last_user_text() or "")
  return intent or "default"
end

function M.on_route(conf, ctx)
  if mf.req.model() ~= "auto" then return end
  local ttl = tonumber(conf.sticky_ttl_ms) or 0
  local intent, key
  if ttl > 0 then
    key = mf.sticky.key()
    intent = mf.sticky.get("lua-router", key)
  end
  if intent == nil or (intent ~= "default" and not (conf.intents or {})[intent]) then
    intent = decide(conf)
    if key then mf.sticky.set("lua-router", key, intent, ttl) end
  end
  ctx.intent = intent
  local model = intent == "default" and conf.default_model or conf.intents[intent].model
  local ok, err = mf.route.set_model(model)
  if not ok then return 503, err end
end

function M.on_response_headers(conf, ctx)
  if ctx.intent then mf.resp.set_header("x-intent", ctx.intent) end
end

return M
