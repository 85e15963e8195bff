local mf = require "mf"
require "mf.json"

describe("mf.json helpers", function()
  it("gets by path, with a default", function()
    local t = { a = { b = { 10, { c = "x" } } }, n = mf.json.null }
    assert.equal("x", mf.json.get(t, "a.b.2.c"))
    assert.equal(10, mf.json.get(t, { "a", "b", 1 }))
    assert.equal("d", mf.json.get(t, "a.z.q", "d"))
    assert.equal("d", mf.json.get(t, "n", "d"))
    assert.equal("d", mf.json.get(t, "a.b.1.c", "d"))
  end)
  it("sets by path, creating tables and arrays", function()
    local t = {}
    mf.json.set(t, "a.b", 1)
    mf.json.set(t, "x.1.y", true)
    assert.equal(1, t.a.b)
    assert.truthy(mf.json.is_array(t.x))
    assert.equal('{"a":{"b":1},"x":[{"y":true}]}', mf.json.encode(t))
    assert.has_error(function() mf.json.set(t, "", 1) end, "empty path")
  end)
  it("copies deeply and keeps arrays marked", function()
    local a = mf.json.array({})
    local t = { list = a, sub = { k = 1 } }
    local c = mf.json.copy(t)
    c.sub.k = 2
    assert.equal(1, t.sub.k)
    assert.truthy(mf.json.is_array(c.list))
    assert.equal('{"list":[],"sub":{"k":2}}', mf.json.encode(c))
  end)
  it("tells arrays from objects", function()
    assert.truthy(mf.json.is_array({ 1, 2 }))
    assert.falsy(mf.json.is_array({ a = 1 }))
    assert.falsy(mf.json.is_array({}))
    assert.truthy(mf.json.is_array(mf.json.decode("[]")))
  end)
end)
