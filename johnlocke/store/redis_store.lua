#!lua name=__LIBRARY__
-- The Redis swarm store's server side, a Redis Functions library: one call per announce (see
-- johnlocke/store/redis.py for the key layout and the theory of operation). The driver loads it
-- under a name that carries a hash of this text, so trackers of different versions can share a
-- Redis. Helpers are defined once, when the library loads, not on every call.
--
-- keys[1]  the swarm's meta hash  P{hex}:m   (its siblings P{hex}:z, :0 .. :5, :a are derived)
-- keys[2]  the bucket's counters  P#...:n    (its sibling the registry P#...:r is derived)
-- args[1]  the info_hash (the registry's field), then what the operation needs
--
-- A record is HSET table peer_id = addr .. u32 last_seen .. u32 key (little-endian); key is
-- 30 bits of the client's key hash plus, in its top 2 bits, the hybrid hashes it used.

-- The keys of the call in progress (Redis runs one call at a time), set by bind().
local sb, M, Z, A, N, R, ih

local function bind(keys, args)
  M = keys[1]
  sb = string.sub(M, 1, -2)
  Z = sb .. 'z'
  A = sb .. 'a'
  N = keys[2]
  R = string.sub(N, 1, -2) .. 'r'
  ih = args[1]
end

local FAM = {[6] = 0, [18] = 1, [8] = 2}   -- address length -> family
local WIDTH = {[0] = 6, 18, 8}             -- family -> address length
local TAG = {[0] = '4', '6', 'w'}          -- family -> first byte of its zset members
local TAGFAM = {[52] = 0, [54] = 1, [119] = 2}
local KEYBITS = 1073741824                 -- 2^30: the key's low bits, the proto bits above
local STEP = 60                            -- seconds between two TTL refreshes of a swarm

local function tkey(t) return sb .. t end

local function ipkey(addr)
  local w = #addr
  if w == 18 then return string.sub(addr, 1, 8) end  -- an IPv6 subscriber has a /64
  return string.sub(addr, 1, w - 2)
end

local function union(a, b)  -- two 2-bit sets of hybrid hashes
  local r = 0
  if a % 2 == 1 or b % 2 == 1 then r = 1 end
  if a >= 2 or b >= 2 then r = r + 2 end
  return r
end

local function ip_add(addr, must)
  if must or redis.call('EXISTS', A) == 1 then redis.call('HINCRBY', A, ipkey(addr), 1) end
end

local function ip_sub(addr)
  if redis.call('EXISTS', A) == 1 then
    local k = ipkey(addr)
    if redis.call('HINCRBY', A, k, -1) <= 0 then redis.call('HDEL', A, k) end
  end
end

local function ensure_ip_counts(ttl)
  if redis.call('EXISTS', A) == 1 then return end
  for t = 0, 5 do
    local w = WIDTH[math.floor(t / 2)]
    for _, v in ipairs(redis.call('HVALS', tkey(t))) do
      redis.call('HINCRBY', A, ipkey(string.sub(v, 1, w)), 1)
    end
  end
  if redis.call('EXISTS', A) == 1 then redis.call('EXPIRE', A, ttl) end
end

-- The role of peer_id in the families other than fam: nil (no record), 0 seeder, 1 leecher.
local function other_role(fam, pid)
  for g = 0, 2 do
    if g ~= fam then
      if redis.call('HEXISTS', tkey(2 * g), pid) == 1 then return 0 end
      if redis.call('HEXISTS', tkey(2 * g + 1), pid) == 1 then return 1 end
    end
  end
  return nil
end

-- The role is the peer's: move its records in the other families to role `to` (0/1).
local function move_others(fam, pid, to)
  for g = 0, 2 do
    if g ~= fam then
      local src, dst = 2 * g + 1 - to, 2 * g + to
      local v = redis.call('HGET', tkey(src), pid)
      if v then
        redis.call('HDEL', tkey(src), pid)
        redis.call('HSET', tkey(dst), pid, v)
        redis.call('HINCRBY', N, src, -1)
        redis.call('HINCRBY', N, dst, 1)
      end
    end
  end
end

local function record_counts()
  local n = {}
  for t = 0, 5 do n[t + 1] = redis.call('HLEN', tkey(t)) end
  return table.concat(n, ' ')
end

local function refresh(ttl, now)
  redis.call('HSET', M, 'e', now)
  redis.call('EXPIRE', M, ttl)
  redis.call('EXPIRE', Z, ttl)
  redis.call('EXPIRE', A, ttl)
  for t = 0, 5 do redis.call('EXPIRE', tkey(t), ttl) end
end

-- A registry entry whose swarm keys are gone (expired by TTL): take it out of the totals.
local function forget_entry()
  local v = redis.call('HGET', R, ih)
  if not v then return end
  local t = 0
  for n in string.gmatch(v, '%d+') do
    if n ~= '0' then redis.call('HINCRBY', N, t, -tonumber(n)) end
    t = t + 1
  end
  redis.call('HINCRBY', N, 's', -1)
  redis.call('HDEL', R, ih)
end

local function delete_swarm()
  local v = record_counts()
  local t = 0
  for n in string.gmatch(v, '%d+') do
    if n ~= '0' then redis.call('HINCRBY', N, t, -tonumber(n)) end
    t = t + 1
  end
  redis.call('DEL', M, Z, A, tkey(0), tkey(1), tkey(2), tkey(3), tkey(4), tkey(5))
  redis.call('HINCRBY', N, 's', -1)
  redis.call('HDEL', R, ih)
end

-- Forget family fam's record of pid (found in table cur with value v); returns nothing.
local function forget_record(fam, pid, cur, v, counts)
  redis.call('HDEL', tkey(cur), pid)
  redis.call('HINCRBY', N, cur, -1)
  ip_sub(string.sub(v, 1, WIDTH[fam]))
  if other_role(fam, pid) == nil then  -- its last record: the peer leaves
    if cur % 2 == 0 then counts[1] = counts[1] - 1 else counts[2] = counts[2] - 1 end
  end
end

local function owner_ok(v, addr, key)
  local w = #addr
  if string.sub(v, 1, w - 2) == string.sub(addr, 1, w - 2) then return true end
  local _, stored = struct.unpack('<I4I4', v, w + 1)
  return key ~= 0 and stored % KEYBITS == key
end

local function announce(args)
  local pid, addr = args[2], args[3]
  local now, key, hold, ttl, pool, cap, proto, seeder, completed, create =
    struct.unpack('<I4I4I4I4I4BBBBB', args[4])
  local w = #addr
  local fam = FAM[w]
  local ts, tl = 2 * fam, 2 * fam + 1
  local meta = redis.call('HMGET', M, 'c', 'i', 'd', 'e')
  local created = 0
  if not meta[1] then
    if create == 0 then return {3} end
    created = 1
    forget_entry()
    meta = {0, 0, 0, false}
  end
  local c, i, d = tonumber(meta[1]), tonumber(meta[2]), tonumber(meta[3])
  local e = tonumber(meta[4])
  local cur, v = ts, redis.call('HGET', tkey(ts), pid)
  if not v then
    cur = tl
    v = redis.call('HGET', tkey(tl), pid)
  end
  local updated, counted, changed = 1, 0, false
  local own = cur
  local target = tl
  if seeder == 1 then target = ts end
  if v then
    if string.sub(v, 1, w) ~= addr and not owner_ok(v, addr, key) then return {1} end
    local seen, stored = struct.unpack('<I4I4', v, w + 1)
    if hold > 0 and now - seen < hold then
      updated = 0
    else
      local old = string.sub(v, 1, w)
      if old ~= addr and ipkey(old) ~= ipkey(addr) then
        ip_sub(old)
        ip_add(addr, false)
      end
      local nkey = key
      if proto > 0 then nkey = key + KEYBITS * union(math.floor(stored / KEYBITS), proto) end
      local value = addr .. struct.pack('<I4I4', now, nkey)
      if target == cur then
        redis.call('HSET', tkey(cur), pid, value)
      else
        redis.call('HDEL', tkey(cur), pid)
        redis.call('HSET', tkey(target), pid, value)
        redis.call('HINCRBY', N, cur, -1)
        redis.call('HINCRBY', N, target, 1)
        move_others(fam, pid, target - ts)
        if seeder == 1 then
          counted = 1
          d, c, i = d + 1, c + 1, i - 1
        else
          c, i = c - 1, i + 1
        end
        changed = true
      end
      redis.call('ZADD', Z, now, TAG[fam] .. pid)
      own = target
    end
  else
    if cap > 0 then
      ensure_ip_counts(ttl)
      local have = redis.call('HGET', A, ipkey(addr))
      if have and tonumber(have) >= cap then return {2, cap} end
    end
    local role = other_role(fam, pid)
    redis.call('HSET', tkey(target), pid, addr .. struct.pack('<I4I4', now, key + KEYBITS * proto))
    redis.call('HINCRBY', N, target, 1)
    redis.call('ZADD', Z, now, TAG[fam] .. pid)
    ip_add(addr, cap > 0)
    if role == nil then
      if seeder == 1 then
        c = c + 1
        if completed == 1 then
          counted = 1
          d = d + 1
        end
      else
        i = i + 1
      end
    elseif role == 1 and seeder == 1 then
      move_others(fam, pid, 0)
      counted = 1
      d, c, i = d + 1, c + 1, i - 1
    elseif role == 0 and seeder == 0 then
      move_others(fam, pid, 1)
      c, i = c - 1, i + 1
    end
    changed = true
    own = target
  end
  if changed then
    redis.call('HSET', M, 'c', c, 'i', i, 'd', d)
    redis.call('HSET', R, ih, record_counts())
    if created == 1 then redis.call('HINCRBY', N, 's', 1) end
  end
  if changed or not e or now - e >= STEP or now < e then
    -- Every key of the swarm gets the same deadline, so a swarm expires whole.
    refresh(ttl, now)
    redis.call('EXPIRE', N, ttl)
    redis.call('EXPIRE', R, ttl)
  end
  local ns, nl = redis.call('HLEN', tkey(ts)), redis.call('HLEN', tkey(tl))
  local ps, pl = '', ''
  if ns > 0 then ps = table.concat(redis.call('HRANDFIELD', tkey(ts), pool + 1, 'WITHVALUES')) end
  if nl > 0 then pl = table.concat(redis.call('HRANDFIELD', tkey(tl), pool + 1, 'WITHVALUES')) end
  return {0, c, i, d, ns, nl, own - ts, counted, updated, created, ps, pl}
end

local function remove(args)
  local pid, addr = args[2], args[3]
  local key = struct.unpack('<I4', args[4])
  local meta = redis.call('HMGET', M, 'c', 'i', 'd')
  if not meta[1] then return {0, 0, 0, 0} end
  local counts = {tonumber(meta[1]), tonumber(meta[2])}
  local fam = FAM[#addr]
  local cur = 2 * fam
  local v = redis.call('HGET', tkey(cur), pid)
  if not v then
    cur = cur + 1
    v = redis.call('HGET', tkey(cur), pid)
  end
  if not v then return {0, counts[1], counts[2], tonumber(meta[3])} end
  if not owner_ok(v, addr, key) then return {1} end
  forget_record(fam, pid, cur, v, counts)
  redis.call('ZREM', Z, TAG[fam] .. pid)
  redis.call('HSET', M, 'c', counts[1], 'i', counts[2])
  -- An emptied swarm keeps its downloaded count until the sweep drops it.
  redis.call('HSET', R, ih, record_counts())
  return {0, counts[1], counts[2], tonumber(meta[3])}
end

local function sweep(args)
  local cutoff, limit = struct.unpack('<I4I4', args[2])
  if redis.call('EXISTS', M) == 0 then
    forget_entry()
    return {0, 0}
  end
  local stale = redis.call('ZRANGEBYSCORE', Z, '-inf', '(' .. cutoff, 'LIMIT', 0, limit)
  local meta = redis.call('HMGET', M, 'c', 'i')
  local counts = {tonumber(meta[1]), tonumber(meta[2])}
  for _, member in ipairs(stale) do
    local fam = TAGFAM[string.byte(member)]
    local pid = string.sub(member, 2)
    local cur = 2 * fam
    local v = redis.call('HGET', tkey(cur), pid)
    if not v then
      cur = cur + 1
      v = redis.call('HGET', tkey(cur), pid)
    end
    if v then forget_record(fam, pid, cur, v, counts) end
  end
  if #stale > 0 then redis.call('ZREM', Z, unpack(stale)) end
  if redis.call('EXISTS', Z) == 0 then
    delete_swarm()
    return {#stale, 0}
  end
  if #stale > 0 then
    redis.call('HSET', M, 'c', counts[1], 'i', counts[2])
    redis.call('HSET', R, ih, record_counts())
  end
  local more = 0
  if #stale == limit then more = 1 end
  return {#stale, more}
end

local function drop(args)
  if redis.call('EXISTS', M) == 0 then
    forget_entry()
    return 0
  end
  delete_swarm()
  return 1
end

local function entry(op)
  return function(keys, args)
    bind(keys, args)
    return op(args)
  end
end

redis.register_function('__PREFIX__announce', entry(announce))
redis.register_function('__PREFIX__remove', entry(remove))
redis.register_function('__PREFIX__sweep', entry(sweep))
redis.register_function('__PREFIX__drop', entry(drop))
redis.register_function{
  function_name = '__PREFIX__totals',
  flags = {'no-writes', 'allow-cross-slot-keys'},
  callback = function(keys)
    local out = {0, 0, 0, 0, 0, 0, 0}
    for _, k in ipairs(keys) do
      local v = redis.call('HMGET', k, 's', '0', '1', '2', '3', '4', '5')
      for j = 1, 7 do out[j] = out[j] + (tonumber(v[j]) or 0) end
    end
    return out
  end,
}
