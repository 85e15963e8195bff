-- mf.sticky: a decision kept per conversation, so that every turn of a
-- conversation goes the same way (the same intent, the same model).
--   mf.sticky.key([opts])            the running request's conversation key
--                                    (opts.body: the body, when you have it)
--   mf.sticky.get(ns, key [, opts])  the value kept, or nil
--   mf.sticky.set(ns, key, value, ttl_ms [, opts])
--   mf.hash(s)                       a 16-hex-digit hash of s (FNV-1a, twice)
-- opts.store = "shared" (default: mf.shared, this node's workers) or
-- "redis" (mf.redis, every node; yields, so only from stages that may
-- pause). A conversation is named by opts.header (default
-- "x-conversation-id") when the client sends it, else by the consumer,
-- the system prompt and the first user message, which stay the same for
-- every turn of one conversation.
local mf = require "mf"
local bit = require "bit"

local M = {}
mf.sticky = M

-- FNV-1a over 32 bits: h = (h xor byte) * 16777619 = h*2^24 + h*403.
local function fnv1a(s, seed)
  local h = seed
  for i = 1, #s do
    h = bit.bxor(h, s:byte(i))
    h = bit.tobit(bit.lshift(h, 24) + h * 403)
  end
  return h
end

function mf.hash(s)
  s = tostring(s)
  return bit.tohex(fnv1a(s, bit.tobit(2166136261))) ..
         bit.tohex(fnv1a(s, bit.tobit(0x811c9dc5 + 0x9e3779b9)))
end

function M.key(opts)
  opts = opts or {}
  local h = mf.req.get_header(opts.header or "x-conversation-id")
  local who = mf.req.consumer() or ""
  if h and h ~= "" then return mf.hash(who .. "\0h\0" .. h) end
  local body = opts.body or mf.req.body() or {}
  local msgs = require "mf.messages"
  return mf.hash(who .. "\0" .. msgs.system(body) .. "\0" .. msgs.first_user(body))
end

local function full(ns, key) return "sticky:" .. ns .. ":" .. key end

function M.get(ns, key, opts)
  local k = full(ns, key)
  if opts and opts.store == "redis" then
    local v, err = mf.redis("GET", k)
    if v == nil then return nil, err end
    if v == mf.null then return nil end
    return v
  end
  return mf.shared.get(k)
end

function M.set(ns, key, value, ttl_ms, opts)
  local k = full(ns, key)
  ttl_ms = math.floor(tonumber(ttl_ms) or 0)
  if opts and opts.store == "redis" then
    local r, err
    if ttl_ms > 0 then
      r, err = mf.redis("SET", k, tostring(value), "PX", tostring(ttl_ms))
    else
      r, err = mf.redis("SET", k, tostring(value))
    end
    if r == nil then return nil, err end
    return true
  end
  return mf.shared.set(k, tostring(value), ttl_ms)
end

return M
