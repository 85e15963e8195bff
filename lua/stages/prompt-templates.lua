-- prompt-templates.lua: prompt templates that teams ship to each other.
-- A template pack is a directory with a pack.yaml (name, version,
-- templates: each with variables, messages in a mustache-like syntax, an
-- optional model, params and who may use it), declared in this stage's
-- `packs:`. A client picks a template by model name,
-- `template:NAME@VERSION` (or `template:NAME`, the highest version),
-- with its values in `variables`, or by the field `prompt: {id, version,
-- variables}`. The template's messages are rendered into the parsed
-- request (values become JSON strings: always escaped) before the
-- client's own messages; `stream` and the client's other fields stay.
-- A missing variable or an unknown template answers 400 naming it.
-- Packs are read when the stage loads and watched: a changed pack.yaml
-- reloads the stage (requests in flight finish on the old one).
-- Configuration: sdk/LUA.md, "Prompt templates".
local mf = require "mf"

local M = { name = "prompt-templates", version = "1.0.0" }

local plans = setmetatable({}, { __mode = "k" })

local function fail(fmt, ...) error("prompt-templates: " .. fmt:format(...), 0) end

local function keys(t) local o = {} for k in pairs(t) do o[#o + 1] = k end table.sort(o) return o end

local function check_keys(t, known, what)
  if type(t) ~= "table" then fail("%s must be a map", what) end
  for k in pairs(t) do
    if not known[k] then
      fail("%s: unknown key '%s' (known: %s)", what, tostring(k), table.concat(keys(known), ", "))
    end
  end
end

local function set(s) local o = {} for k in s:gmatch("%S+") do o[k] = true end return o end

local TOP = set("packs")
local PACK = set("name version description templates")
local TPL = set("description model params allow variables messages")
local VAR = set("required default description max_length")
local ALLOW = set("consumers groups")
local MSG = set("role content")

-- Parses a template text into parts: strings, {var=}, and sections
-- {section=, inverted=, parts=}. Names are letters, digits, _, - and .
local function parse(text, what, vars)
  local parts, stack, pos = {}, {}, 1
  local cur = parts
  while true do
    local s, e, tag = text:find("{{%s*(.-)%s*}}", pos)
    if not s then break end
    if s > pos then cur[#cur + 1] = text:sub(pos, s - 1) end
    local kind, name = tag:match("^([#^/]?)%s*([%w_%.%-]+)$")
    if not name then fail("%s: '{{%s}}' is not a variable tag", what, tag) end
    if kind == "/" then
      local top = stack[#stack]
      if not top or top.name ~= name then fail("%s: {{/%s}} closes no open section", what, name) end
      stack[#stack] = nil
      cur = top.outer
    else
      if not vars[name] then fail("%s: {{%s}} is not a declared variable", what, name) end
      if kind == "" then
        cur[#cur + 1] = { var = name }
      else
        local sec = { section = name, inverted = kind == "^", parts = {} }
        cur[#cur + 1] = sec
        stack[#stack + 1] = { name = name, outer = cur }
        cur = sec.parts
      end
    end
    pos = e + 1
  end
  if #stack > 0 then fail("%s: section {{#%s}} is not closed", what, stack[#stack].name) end
  if pos <= #text then cur[#cur + 1] = text:sub(pos) end
  return parts
end

local function render(parts, values, out)
  for _, p in ipairs(parts) do
    if type(p) == "string" then
      out[#out + 1] = p
    elseif p.var then
      out[#out + 1] = tostring(values[p.var] or "")
    else
      local v = values[p.section]
      local on = v ~= nil and v ~= false and v ~= "" and v ~= 0
      if on ~= p.inverted then render(p.parts, values, out) end
    end
  end
  return out
end

local function globs(v, what)
  if v == nil then return nil end
  if type(v) == "string" then return { v } end
  if type(v) ~= "table" then fail("%s must be a list of globs", what) end
  return v
end

local function load_pack(dir, p)
  local doc, err = mf.files.yaml(dir .. "/pack.yaml")
  if not doc then fail("pack %s: %s", dir, err) end
  check_keys(doc, PACK, dir .. "/pack.yaml")
  if type(doc.name) ~= "string" then fail("%s/pack.yaml: name is required", dir) end
  if type(doc.version) == "number" and doc.version ~= math.floor(doc.version) then
    -- YAML reads 1.10 as the number 1.1: a dotted version is quoted
    fail("%s/pack.yaml: version %s: quote a dotted version (version: \"1.10\")", dir, tostring(doc.version))
  end
  local version = type(doc.version) == "number" and ("%d"):format(doc.version) or tostring(doc.version or "")
  if not version:match("^[%w%.%-_]+$") then fail("%s/pack.yaml: version is required (1, 2.1, ...)", dir) end
  if type(doc.templates) ~= "table" or next(doc.templates) == nil then
    fail("%s/pack.yaml: templates is required", dir)
  end
  for _, name in ipairs(keys(doc.templates)) do
    local t = doc.templates[name]
    local what = ("template %s@%s (%s/pack.yaml)"):format(name, version, dir)
    check_keys(t, TPL, what)
    local vars = {}
    for vname, spec in pairs(t.variables or {}) do
      if type(spec) ~= "table" then spec = { default = spec } end
      check_keys(spec, VAR, what .. ": variables." .. vname)
      vars[vname] = { required = spec.required == true, default = spec.default,
                      max_length = tonumber(spec.max_length) }
    end
    if type(t.messages) ~= "table" or #t.messages == 0 then fail("%s: messages is required", what) end
    local msgs = {}
    for i, m in ipairs(t.messages) do
      check_keys(m, MSG, ("%s: messages[%d]"):format(what, i))
      if m.role ~= "system" and m.role ~= "user" and m.role ~= "assistant" and m.role ~= "developer" then
        fail("%s: messages[%d].role must be system, developer, user or assistant", what, i)
      end
      if type(m.content) ~= "string" then fail("%s: messages[%d].content must be a text", what, i) end
      msgs[i] = { role = m.role, parts = parse(m.content, ("%s: messages[%d]"):format(what, i), vars) }
    end
    if t.allow then check_keys(t.allow, ALLOW, what .. ": allow") end
    local tpl = {
      name = name, version = version, pack = doc.name, vars = vars, messages = msgs,
      model = t.model, params = t.params or {},
      consumers = globs(t.allow and t.allow.consumers, what .. ": allow.consumers"),
      groups = globs(t.allow and t.allow.groups, what .. ": allow.groups"),
    }
    local id = name .. "@" .. version
    if p.by_id[id] then fail("%s: %s is also in %s", what, id, p.by_id[id].dir) end
    tpl.dir = dir
    p.by_id[id] = tpl
    local best = p.latest[name]
    if not best or tonumber(version) and tonumber(best.version) and tonumber(version) > tonumber(best.version)
        or (not (tonumber(version) and tonumber(best.version)) and version > best.version) then
      p.latest[name] = tpl
    end
  end
end

local function compile(conf)
  check_keys(conf, TOP, "config")
  local p = { by_id = {}, latest = {} }
  local packs = conf.packs
  if type(packs) == "string" then packs = { packs } end
  if type(packs) ~= "table" or #packs == 0 then fail("packs: a list of pack directories is required") end
  for _, dir in ipairs(packs) do load_pack(tostring(dir), p) end
  return p
end

function M.init(conf)
  plans[conf] = compile(conf)
  return true
end

local function allowed(t)
  if not t.consumers and not t.groups then return true end
  local c = mf.req.consumer()
  if t.consumers and c and mf.match.glob_any(t.consumers, c) then return true end
  local g = mf.match.group()
  if t.groups and g and mf.match.glob_any(t.groups, g) then return true end
  return false
end

function M.on_request(conf, ctx)
  local p = plans[conf]
  local model = mf.req.model() or ""
  local by_model = model:sub(1, 9) == "template:"
  local id, version, values, body
  if by_model then
    body = mf.req.body()
    id, version = model:sub(10):match("^([^@]+)@?(.*)$")
    values = body.variables
  else
    -- the field form; the body is copied only when it has the field
    local prompt = mf.req.body_field("prompt")
    if type(prompt) ~= "table" then return end
    body = mf.req.body()
    id = prompt.id
    version = prompt.version ~= nil and tostring(prompt.version) or ""
    values = prompt.variables
    if type(id) ~= "string" then return 400, "prompt.id: the template's name is required" end
  end
  if not id or id == "" then return 400, "template: the model names no template (template:NAME@VERSION)" end
  local t = version ~= "" and p.by_id[id .. "@" .. version] or (version == "" and p.latest[id])
  if not t then
    return 400, ("unknown template '%s%s'"):format(id, version ~= "" and "@" .. version or "")
  end
  if not allowed(t) then
    return 403, ("template '%s@%s' is not allowed for this consumer"):format(t.name, t.version)
  end
  if values ~= nil and (type(values) ~= "table" or mf.json.is_array(values) and next(values) ~= nil) then
    return 400, "variables must be an object"
  end
  values = values or {}
  local given = {}
  for k, v in pairs(values) do
    if not t.vars[k] then
      return 400, ("template '%s@%s' has no variable '%s'"):format(t.name, t.version, tostring(k))
    end
    if type(v) ~= "string" and type(v) ~= "number" and type(v) ~= "boolean" then
      return 400, ("variable '%s' must be a string, number or boolean"):format(k)
    end
    local spec = t.vars[k]
    if spec.max_length and type(v) == "string" and #v > spec.max_length then
      return 400, ("variable '%s' is longer than %d bytes"):format(k, spec.max_length)
    end
    given[k] = v
  end
  for name, spec in pairs(t.vars) do
    if given[name] == nil then
      if spec.required then
        return 400, ("template '%s@%s': missing variable '%s'"):format(t.name, t.version, name)
      end
      given[name] = spec.default
    end
  end
  -- the template's messages, then the client's own
  local msgs = mf.json.array({})
  for _, m in ipairs(t.messages) do
    msgs[#msgs + 1] = { role = m.role, content = table.concat(render(m.parts, given, {})) }
  end
  if type(body.messages) == "table" then
    for _, m in ipairs(body.messages) do msgs[#msgs + 1] = m end
  end
  body.messages = msgs
  body.variables = nil
  body.prompt = nil
  for k, v in pairs(t.params) do
    if body[k] == nil then body[k] = v end
  end
  if by_model then
    -- the model named the template: the template names the model
    if not t.model then
      return 400, ("template '%s@%s' names no model: pick one with the prompt field"):format(t.name, t.version)
    end
    body.model = t.model
  end
  local ok, err = mf.req.set_body(body)
  if not ok then return 500, err end
  ctx.template = t.name .. "@" .. t.version
  mf.req.set_header("x-manifold-template", ctx.template)
end

function M.on_response_headers(conf, ctx)
  if ctx.template then mf.resp.set_header("x-manifold-template", ctx.template) end
end

return M
