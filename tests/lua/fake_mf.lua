-- Fakes of the host's C part of mf for the library's unit tests: a JSON
-- encoder/decoder in Lua, an in-memory shared dict and Redis (GET, SET
-- with PX, their clock advanced by the tests), and a request whose body,
-- headers and consumer the tests set.
local F = {}

local null = setmetatable({}, { __tostring = function() return "null" end })
local array_mt = { __jsontype = "array" }

local function encode(v, out)
  local t = type(v)
  if v == null then out[#out + 1] = "null"
  elseif t == "string" then out[#out + 1] = string.format("%q", v):gsub("\\\n", "\\n")
  elseif t == "number" or t == "boolean" then out[#out + 1] = tostring(v)
  elseif t == "table" then
    local mt = getmetatable(v)
    if (mt and mt.__jsontype == "array") or v[1] ~= nil then
      out[#out + 1] = "["
      for i, x in ipairs(v) do
        if i > 1 then out[#out + 1] = "," end
        encode(x, out)
      end
      out[#out + 1] = "]"
    else
      local keys = {}
      for k in pairs(v) do keys[#keys + 1] = tostring(k) end
      table.sort(keys)
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        encode(k, out)
        out[#out + 1] = ":"
        encode(v[k] == nil and v[tonumber(k)] or v[k], out)
      end
      out[#out + 1] = "}"
    end
  else error("cannot encode " .. t) end
end

local function decode(s)
  local i = 1
  local function ws() i = s:find("[^ \t\r\n]", i) or #s + 1 end
  local value
  local function str()
    local out = {}
    i = i + 1
    while true do
      local c = s:sub(i, i)
      if c == "" then error("unterminated string") end
      if c == '"' then i = i + 1 return table.concat(out) end
      if c == "\\" then
        local e = s:sub(i + 1, i + 1)
        local map = { n = "\n", t = "\t", r = "\r", b = "\b", f = "\f" }
        if e == "u" then
          out[#out + 1] = string.char(tonumber(s:sub(i + 2, i + 5), 16) % 256)
          i = i + 6
        else
          out[#out + 1] = map[e] or e
          i = i + 2
        end
      else
        out[#out + 1] = c
        i = i + 1
      end
    end
  end
  function value()
    ws()
    local c = s:sub(i, i)
    if c == "{" then
      local t = {}
      i = i + 1 ws()
      if s:sub(i, i) == "}" then i = i + 1 return t end
      while true do
        ws()
        local k = str()
        ws() assert(s:sub(i, i) == ":", "expected :") i = i + 1
        t[k] = value()
        ws()
        local d = s:sub(i, i) i = i + 1
        if d == "}" then return t end
        assert(d == ",", "expected ,")
      end
    elseif c == "[" then
      local t = setmetatable({}, array_mt)
      i = i + 1 ws()
      if s:sub(i, i) == "]" then i = i + 1 return t end
      while true do
        t[#t + 1] = value()
        ws()
        local d = s:sub(i, i) i = i + 1
        if d == "]" then return t end
        assert(d == ",", "expected ,")
      end
    elseif c == '"' then return str()
    elseif s:sub(i, i + 3) == "true" then i = i + 4 return true
    elseif s:sub(i, i + 4) == "false" then i = i + 5 return false
    elseif s:sub(i, i + 3) == "null" then i = i + 4 return null
    else
      local num = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", i)
      if not num or num == "" then error("invalid JSON at " .. i) end
      i = i + #num
      return tonumber(num)
    end
  end
  local ok, v = pcall(value)
  if not ok then return nil, "invalid JSON: " .. tostring(v) end
  return v
end

local state = {}

F.mf = {
  null = null,
  json = {
    null = null,
    encode = function(v) local out = {} encode(v, out) return table.concat(out) end,
    decode = decode,
    array = function(t) return setmetatable(t or {}, array_mt) end,
  },
  shared = {
    get = function(k)
      local e = state.shared[k]
      if e and (e.exp == 0 or e.exp > state.now) then return e.v end
      return nil
    end,
    set = function(k, v, ttl)
      state.shared[k] = { v = v, exp = (ttl or 0) > 0 and state.now + ttl or 0 }
      return true
    end,
    delete = function(k) state.shared[k] = nil return true end,
  },
  redis = function(cmd, k, v, px, ms)
    state.redis_calls[#state.redis_calls + 1] = { cmd, k, v, px, ms }
    if state.redis_down then return nil, "redis: connection refused" end
    if cmd == "GET" then
      local e = state.redis[k]
      if e and (e.exp == 0 or e.exp > state.now) then return e.v end
      return null
    elseif cmd == "SET" then
      state.redis[k] = { v = v, exp = px == "PX" and state.now + tonumber(ms) or 0 }
      return "OK"
    end
    return nil, "ERR unknown command"
  end,
  now = function() return state.now end,
  req = {
    body = function() return state.body end,
    get_header = function(n) return state.headers[n:lower()] end,
    consumer = function() return state.consumer end,
    consumer_record = function() return state.record end,
  },
}

function F.reset()
  state.shared, state.redis, state.redis_calls = {}, {}, {}
  state.redis_down = false
  state.now = 1000
  state.body, state.headers, state.consumer, state.record = {}, {}, nil, nil
end

-- What the tests set and read.
F.state = state
F.reset()

return F
