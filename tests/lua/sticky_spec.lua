local fake = require "fake_mf"
local mf = require "mf"
local sticky = require "mf.sticky"

describe("mf.hash", function()
  it("is FNV-1a: the 32-bit reference values", function()
    -- FNV-1a 32 of "" is 811c9dc5, of "a" e40c292c, of "foobar" bf9cf968
    assert.equal("811c9dc5", mf.hash(""):sub(1, 8))
    assert.equal("e40c292c", mf.hash("a"):sub(1, 8))
    assert.equal("bf9cf968", mf.hash("foobar"):sub(1, 8))
    assert.equal(16, #mf.hash("x"))
    assert.truthy(mf.hash("a") ~= mf.hash("b"))
  end)
end)

describe("mf.sticky", function()
  local function conv(turns)
    local m = { { role = "system", content = "sys" }, { role = "user", content = "hello" } }
    for i = 1, turns do
      m[#m + 1] = { role = "assistant", content = "a" .. i }
      m[#m + 1] = { role = "user", content = "q" .. i }
    end
    return { messages = m }
  end
  it("names every turn of a conversation the same and others apart", function()
    fake.state.body = conv(0)
    local k1 = sticky.key()
    fake.state.body = conv(3)
    assert.equal(k1, sticky.key())
    fake.state.body = { messages = { { role = "user", content = "other" } } }
    assert.truthy(sticky.key() ~= k1)
    fake.state.consumer = "bob"
    fake.state.body = conv(0)
    assert.truthy(sticky.key() ~= k1, "another consumer's conversation is another key")
  end)
  it("prefers the client's conversation header", function()
    fake.state.headers["x-conversation-id"] = "c-1"
    fake.state.body = conv(0)
    local k = sticky.key()
    fake.state.body = { messages = { { role = "user", content = "else" } } }
    assert.equal(k, sticky.key())
    fake.state.headers["x-session"] = "s-9"
    assert.truthy(sticky.key({ header = "x-session" }) ~= k)
  end)
  it("keeps a value in the shared dict until its ttl", function()
    assert.is_nil(sticky.get("intent", "k"))
    sticky.set("intent", "k", "code", 500)
    assert.equal("code", sticky.get("intent", "k"))
    assert.is_nil(sticky.get("other", "k"))
    fake.state.now = fake.state.now + 501
    assert.is_nil(sticky.get("intent", "k"))
  end)
  it("keeps a value in Redis with PX", function()
    local o = { store = "redis" }
    assert.is_nil(sticky.get("intent", "k", o))
    assert.truthy(sticky.set("intent", "k", "math", 2000, o))
    assert.equal("math", sticky.get("intent", "k", o))
    assert.same({ "SET", "sticky:intent:k", "math", "PX", "2000" }, fake.state.redis_calls[2])
    fake.state.redis_down = true
    local v, err = sticky.get("intent", "k", o)
    assert.is_nil(v)
    assert.equal("redis: connection refused", err)
  end)
end)
