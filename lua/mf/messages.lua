-- mf.messages: readers for a chat request body (the canonical OpenAI chat
-- JSON as mf.req.body() returns it): message texts, the system prompt,
-- the last user message, tools and tool calls, a token estimate.
-- Every function takes the body as its first argument; when it is nil,
-- the running request's body is read (mf.req.body(), a copy: pass the
-- body you already have when calling several of them).
local mf = require "mf"

local M = {}
mf.messages = M

local function body_of(body)
  if body ~= nil then return body end
  return mf.req.body() or {}
end

-- The text of one message: a string content, or its text parts joined
-- with "\n" (image, audio and other parts are skipped).
function M.text(msg)
  if type(msg) ~= "table" then return "" end
  local c = msg.content
  if type(c) == "string" then return c end
  if type(c) ~= "table" then return "" end
  local out = {}
  for _, part in ipairs(c) do
    if type(part) == "string" then
      out[#out + 1] = part
    elseif type(part) == "table" and type(part.text) == "string" and
        (part.type == nil or part.type == "text" or part.type == "input_text") then
      out[#out + 1] = part.text
    end
  end
  return table.concat(out, "\n")
end

-- The messages array ({} when there is none).
function M.list(body)
  body = body_of(body)
  local m = body.messages
  if type(m) ~= "table" then return {} end
  return m
end

-- The messages of a role, in order.
function M.by_role(body, role)
  local out = {}
  for _, msg in ipairs(M.list(body)) do
    if type(msg) == "table" and msg.role == role then out[#out + 1] = msg end
  end
  return out
end

-- The system prompt: the texts of the system (and developer) messages,
-- joined with "\n"; "" when there is none.
function M.system(body)
  local out = {}
  for _, msg in ipairs(M.list(body)) do
    if type(msg) == "table" and (msg.role == "system" or msg.role == "developer") then
      out[#out + 1] = M.text(msg)
    end
  end
  return table.concat(out, "\n")
end

-- The text of the last user message ("" when there is none).
function M.last_user(body)
  local list = M.list(body)
  for i = #list, 1, -1 do
    local msg = list[i]
    if type(msg) == "table" and msg.role == "user" then return M.text(msg) end
  end
  return ""
end

-- The text of the first user message ("" when there is none).
function M.first_user(body)
  for _, msg in ipairs(M.list(body)) do
    if type(msg) == "table" and msg.role == "user" then return M.text(msg) end
  end
  return ""
end

-- The texts of every user message, in order.
function M.user_texts(body)
  local out = {}
  for _, msg in ipairs(M.by_role(body, "user")) do out[#out + 1] = M.text(msg) end
  return out
end

-- The whole conversation as text: "role: text" lines.
function M.transcript(body)
  local out = {}
  for _, msg in ipairs(M.list(body)) do
    if type(msg) == "table" then
      out[#out + 1] = tostring(msg.role) .. ": " .. M.text(msg)
    end
  end
  return table.concat(out, "\n")
end

-- A rough token count of a text or of the body's messages: one token per
-- 4 bytes, rounded up, as the gateway estimates when an upstream gives no
-- usage.
function M.estimate_tokens(x)
  local s = x
  if type(x) ~= "string" then
    local n = 0
    for _, msg in ipairs(M.list(x)) do n = n + #M.text(msg) end
    return math.ceil(n / 4)
  end
  return math.ceil(#s / 4)
end

-- The tools the request offers: a list of {name, description, parameters}
-- (function tools; the Chat Completions and the flat shape are both read).
function M.tools(body)
  body = body_of(body)
  local out = {}
  if type(body.tools) ~= "table" then return out end
  for _, t in ipairs(body.tools) do
    if type(t) == "table" then
      local f = type(t["function"]) == "table" and t["function"] or t
      if type(f.name) == "string" then
        out[#out + 1] = { name = f.name, description = f.description,
                          parameters = f.parameters }
      end
    end
  end
  return out
end

-- Whether the request offers the tool `name`.
function M.has_tool(body, name)
  for _, t in ipairs(M.tools(body)) do
    if t.name == name then return true end
  end
  return false
end

-- The tool calls of the assistant messages, in order: {id, name, arguments}
-- (arguments is the JSON text the model produced).
function M.tool_calls(body)
  local out = {}
  for _, msg in ipairs(M.list(body)) do
    if type(msg) == "table" and msg.role == "assistant" and
        type(msg.tool_calls) == "table" then
      for _, c in ipairs(msg.tool_calls) do
        local f = type(c) == "table" and c["function"] or nil
        if type(f) == "table" then
          out[#out + 1] = { id = c.id, name = f.name, arguments = f.arguments }
        end
      end
    end
  end
  return out
end

-- Appends (where = "append", the default) or prepends a message of `role`
-- to the body's messages; a system message prepended goes after the
-- leading system messages, so that the instructions stay first. Returns
-- the body (changed in place; hand it to mf.req.set_body).
function M.add(body, role, text, where)
  if type(body.messages) ~= "table" then body.messages = mf.json.array({}) end
  local list = body.messages
  local msg = { role = role, content = text }
  if where == "prepend" then
    local at = 1
    if role ~= "system" then
      while type(list[at]) == "table" and
          (list[at].role == "system" or list[at].role == "developer") do
        at = at + 1
      end
    end
    table.insert(list, at, msg)
  else
    list[#list + 1] = msg
  end
  return body
end

return M
