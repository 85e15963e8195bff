-- prompt-decorator.lua: adds system or user messages to chat requests,
-- by rule. Each decorator is tried in order; every one whose `when`
-- holds applies:
--   system + prepend  the first message of the request
--   system + append   after the request's leading system messages (still
--                     in the instructions, so an Anthropic upstream gets
--                     it in `system`)
--   user + prepend    before the first message that is not a system one
--   user + append     the last message
-- `when` takes the keys of mf.match.rule (words, regex, glob, headers,
-- consumer, group, min_tokens, max_tokens) and `models` (globs of the
-- model asked); an empty or absent `when` always holds.
-- Configuration: sdk/LUA.md, "Prompt decorators".
local mf = require "mf"

local M = { name = "prompt-decorator", version = "1.0.0" }

local plans = setmetatable({}, { __mode = "k" })

local function fail(fmt, ...) error("prompt-decorator: " .. fmt:format(...), 0) end

local function set(s) local o = {} for k in s:gmatch("%S+") do o[k] = true end return o end
local TOP = set("decorators")
local DEC = set("when system user position")
local WHEN = set("models words regex regex_flags glob headers consumer group min_tokens max_tokens")

local function check_keys(t, known, what)
  if type(t) ~= "table" then fail("%s must be a map", what) end
  for k in pairs(t) do
    if not known[k] then
      local names = {}
      for n in pairs(known) do names[#names + 1] = n end
      table.sort(names)
      fail("%s: unknown key '%s' (known: %s)", what, tostring(k), table.concat(names, ", "))
    end
  end
end

local function compile(conf)
  check_keys(conf, TOP, "config")
  if type(conf.decorators) ~= "table" or #conf.decorators == 0 then
    fail("decorators: a list is required")
  end
  local p = { list = {}, tokens = false }
  for i, d in ipairs(conf.decorators) do
    local what = "decorators[" .. i .. "]"
    check_keys(d, DEC, what)
    if (d.system == nil) == (d.user == nil) then fail("%s: needs exactly one of system or user", what) end
    local text = d.system or d.user
    if type(text) ~= "string" or text == "" then fail("%s: the text must be a non-empty string", what) end
    local pos = d.position or "prepend"
    if pos ~= "prepend" and pos ~= "append" then fail("%s: position is prepend or append", what) end
    local when = d.when or {}
    check_keys(when, WHEN, what .. ".when")
    local res = type(when.regex) == "table" and when.regex or { when.regex }
    for _, re in ipairs(res) do
      local ok, err = pcall(mf.regex.find, "", re, when.regex_flags or "i")
      if not ok then fail("%s.when: %s", what, err) end
    end
    local rule = {}
    for k, v in pairs(when) do if k ~= "models" then rule[k] = v end end
    if when.min_tokens or when.max_tokens then p.tokens = true end
    p.list[#p.list + 1] = { role = d.system and "system" or "user", text = text, pos = pos,
                            models = when.models, rule = next(rule) and rule or nil }
  end
  return p
end

function M.init(conf)
  plans[conf] = compile(conf)
  return true
end

local function insert(msgs, d)
  local at
  if d.pos == "append" and d.role == "user" then
    at = #msgs + 1
  elseif d.pos == "prepend" and d.role == "system" then
    at = 1
  else
    -- after the leading system (and developer) messages
    at = 1
    while type(msgs[at]) == "table" and (msgs[at].role == "system" or msgs[at].role == "developer") do
      at = at + 1
    end
  end
  table.insert(msgs, at, { role = d.role, content = d.text })
end

function M.on_request(conf, ctx)
  local p = plans[conf]
  local model = mf.req.model() or ""
  local facts, body
  local applied = {}
  for i, d in ipairs(p.list) do
    local ok = true
    if d.models and not mf.match.glob_any(d.models, model) then ok = false end
    if ok and d.rule then
      if not facts then
        facts = { text = mf.req.last_user_text() or "", consumer = mf.req.consumer(),
                  group = mf.match.group(), headers = {} }
        if p.tokens then
          body = body or mf.req.body()
          facts.tokens = mf.messages.estimate_tokens(body)
        end
      end
      for name in pairs(d.rule.headers or {}) do
        facts.headers[name:lower()] = mf.req.get_header(name)
      end
      ok = mf.match.rule(d.rule, facts)
    end
    if ok then applied[#applied + 1] = i end
  end
  if #applied == 0 then return end
  body = body or mf.req.body()
  if type(body.messages) ~= "table" then return end
  for _, i in ipairs(applied) do insert(body.messages, p.list[i]) end
  local ok, err = mf.req.set_body(body)
  if not ok then return 500, err end
  ctx.decorated = #applied
end

return M
