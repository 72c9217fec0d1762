#!lua name=__LIBRARY__
-- The Redis swarm store's server side, a Redis Functions library: one call per announce (see
-- johnlocke/store/redis.py for the key layout and the theory of operation). The driver loads it
-- under a name that carries a hash of this text, so trackers of different versions can share a
-- Redis. Helpers are defined once, when the library loads, not on every call.
--
-- keys[1]  the swarm's meta hash  P{hex}:m   (its siblings P{hex}:0 .. :5, :i, :a are derived)
-- keys[2]  the bucket's counters  P#...:n    (its sibling the registry P#...:r is derived)
-- args[1]  the info_hash (the registry's field), then what the operation needs
--
-- Table t (family << 1 | leecher) is one string of fixed-size records, like the memory store's
-- columns: peer_id(20) addr(6, 18 or 8) last_seen(u32) key(u32), little-endian; key is 30 bits
-- of the client's key hash plus, in its top 2 bits, the hybrid hashes it used. Tables stay
-- dense: a removed record is replaced by the table's last one. A swarm of more than SMALL
-- records has an index P{hex}:i (peer_id -> one u32 per family: slot * 2 + leecher + 1, 0 for
-- none); a smaller one finds a peer_id by searching its tables, which costs less than the index.

local sb, M, A, I, N, R, ih  -- the keys of the call in progress (set by bind)
local n = {}                 -- records per table, from the meta hash
local cols = {}              -- tables read whole during this call (find), reused by pool_of
local fresh = {}             -- keys this call created (they need their TTL)
local c, i, d, e, x          -- complete, incomplete, downloaded, TTL refresh time, index built

local FAM = {[6] = 0, [18] = 1, [8] = 2}                 -- address length -> family
local WIDTH = {[0] = 6, 6, 18, 18, 8, 8}                  -- table -> address length
local STRIDE = {[0] = 34, 34, 46, 46, 36, 36}             -- table -> record length
local KEYBITS = 1073741824  -- 2^30: the key's low bits, the proto bits above
local STEP = 60             -- seconds between two TTL refreshes of a swarm
local SMALL = 16            -- swarms up to this many records keep no index
local RUN = 50              -- records per run of a pool

local function bind(keys, args)
  M = keys[1]
  sb = string.sub(M, 1, -2)
  A = sb .. 'a'
  I = sb .. 'i'
  N = keys[2]
  R = string.sub(N, 1, -2) .. 'r'
  ih = args[1]
  cols = {}
  fresh = {}
end

local function tkey(t) return sb .. t end

local function load_meta()
  local v = redis.call('HMGET', M, 'c', 'i', 'd', 'e', 'x', '0', '1', '2', '3', '4', '5')
  if not v[1] then return false end
  c, i, d, e, x = tonumber(v[1]), tonumber(v[2]), tonumber(v[3]), tonumber(v[4]), tonumber(v[5])
  for t = 0, 5 do n[t] = tonumber(v[6 + t]) or 0 end
  return true
end

local function fresh_meta()
  c, i, d, e, x = 0, 0, 0, nil, 0
  for t = 0, 5 do n[t] = 0 end
end

local function total() return n[0] + n[1] + n[2] + n[3] + n[4] + n[5] end
local function counts_text() return table.concat({n[0], n[1], n[2], n[3], n[4], n[5]}, ' ') end

local function save_meta()
  redis.call('HSET', M, 'c', c, 'i', i, 'd', d, 'x', x,
    '0', n[0], '1', n[1], '2', n[2], '3', n[3], '4', n[4], '5', n[5])
  redis.call('HSET', R, ih, counts_text())
end

-- Every key of the swarm gets the same deadline, so a swarm expires whole.
local function refresh(ttl, now)
  redis.call('HSET', M, 'e', now)
  redis.call('EXPIRE', M, ttl)
  redis.call('EXPIRE', A, ttl)
  if x == 1 then redis.call('EXPIRE', I, ttl) end
  for t = 0, 5 do
    if n[t] > 0 then redis.call('EXPIRE', tkey(t), ttl) end
  end
  redis.call('EXPIRE', N, ttl)
  redis.call('EXPIRE', R, ttl)
end

-- Between two refreshes, a key this call created gets a TTL of its own (a little later than
-- the others' deadline, by less than STEP).
local function refresh_fresh(ttl)
  for _, k in ipairs(fresh) do redis.call('EXPIRE', k, ttl) end
end

-- The part of an address the key rule sees: the IP (no port), or a WebRTC endpoint id whole.
local function host(addr)
  local w = #addr
  if w == 8 then return addr end
  return string.sub(addr, 1, w - 2)
end

local function ipkey(addr)
  if #addr == 18 then return string.sub(addr, 1, 8) end  -- an IPv6 subscriber has a /64
  return host(addr)
end

local function union(a, b)  -- two 2-bit sets of hybrid hashes
  local r = 0
  if a % 2 == 1 or b % 2 == 1 then r = 1 end
  if a >= 2 or b >= 2 then r = r + 2 end
  return r
end

-- --- the index ---------------------------------------------------------------------------

local function index_set(pid, fam, t, s)  -- s == nil: no record of that family any more
  if x ~= 1 then return end
  local v = redis.call('HGET', I, pid)
  local ent = {0, 0, 0}
  if v then ent[1], ent[2], ent[3] = struct.unpack('<I4I4I4', v) end
  ent[fam + 1] = s and (s * 2 + t % 2 + 1) or 0
  if ent[1] + ent[2] + ent[3] == 0 then
    redis.call('HDEL', I, pid)
  else
    redis.call('HSET', I, pid, struct.pack('<I4I4I4', ent[1], ent[2], ent[3]))
  end
end

local function build_index()
  redis.call('DEL', I)
  local ents = {}
  for t = 0, 5 do
    if n[t] > 0 then
      local S = STRIDE[t]
      local col = redis.call('GETRANGE', tkey(t), 0, n[t] * S - 1)
      local f = math.floor(t / 2) + 1
      for s = 0, n[t] - 1 do
        local pid = string.sub(col, s * S + 1, s * S + 20)
        local ent = ents[pid] or {0, 0, 0}
        ent[f] = s * 2 + t % 2 + 1
        ents[pid] = ent
      end
    end
  end
  local batch = {}
  for pid, ent in pairs(ents) do
    batch[#batch + 1] = pid
    batch[#batch + 1] = struct.pack('<I4I4I4', ent[1], ent[2], ent[3])
    if #batch >= 1000 then
      redis.call('HSET', I, unpack(batch))
      batch = {}
    end
  end
  if #batch > 0 then redis.call('HSET', I, unpack(batch)) end
  x = 1
  fresh[#fresh + 1] = I
end

local function maintain_index()
  local all = total()
  if x ~= 1 and all > SMALL then
    build_index()
  elseif x == 1 and all < SMALL / 2 then
    redis.call('DEL', I)
    x = 0
  end
end

-- Family fam's record of pid: table, slot, record; nil if it has none.
local function find(fam, pid)
  if x == 1 then
    local v = redis.call('HGET', I, pid)
    if not v then return nil end
    local ent = select(fam + 1, struct.unpack('<I4I4I4', v))
    if ent == 0 then return nil end
    local t = 2 * fam + (ent - 1) % 2
    local s = math.floor((ent - 1) / 2)
    local S = STRIDE[t]
    local rec = redis.call('GETRANGE', tkey(t), s * S, s * S + S - 1)
    if string.sub(rec, 1, 20) ~= pid then return nil end  -- never trust a stale entry
    return t, s, rec
  end
  for r = 0, 1 do
    local t = 2 * fam + r
    if n[t] > 0 then
      local S = STRIDE[t]
      local col = redis.call('GETRANGE', tkey(t), 0, n[t] * S - 1)
      cols[t] = col
      local p = string.find(col, pid, 1, true)
      while p do
        if (p - 1) % S == 0 then return t, (p - 1) / S, string.sub(col, p, p + S - 1) end
        p = string.find(col, pid, p + 1, true)
      end
    end
  end
  return nil
end

-- --- tables --------------------------------------------------------------------------------

local function append(t, pid, rec)
  local s = n[t]
  if s == 0 then fresh[#fresh + 1] = tkey(t) end
  cols[t] = nil
  redis.call('SETRANGE', tkey(t), s * STRIDE[t], rec)
  n[t] = s + 1
  index_set(pid, math.floor(t / 2), t, s)
  redis.call('HINCRBY', N, t, 1)
end

local function cut(t, s, pid)
  cols[t] = nil
  local S = STRIDE[t]
  local last = n[t] - 1
  local key = tkey(t)
  if s ~= last then
    local rec = redis.call('GETRANGE', key, last * S, last * S + S - 1)
    redis.call('SETRANGE', key, s * S, rec)
    index_set(string.sub(rec, 1, 20), math.floor(t / 2), t, s)
  end
  n[t] = last
  index_set(pid, math.floor(t / 2), t, nil)
  redis.call('HINCRBY', N, t, -1)
  if last == 0 then
    redis.call('DEL', key)
  elseif redis.call('STRLEN', key) > 2 * last * S + 512 then
    -- Give back the room a shrunken table no longer needs (strings never shrink by themselves).
    redis.call('SET', key, redis.call('GETRANGE', key, 0, last * S - 1), 'KEEPTTL')
  end
end

-- --- per-IP counts -------------------------------------------------------------------------

local function ip_add(addr, must)
  if redis.call('EXISTS', A) == 1 then
    redis.call('HINCRBY', A, ipkey(addr), 1)
  elseif must then
    redis.call('HINCRBY', A, ipkey(addr), 1)
    fresh[#fresh + 1] = A
  end
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
    if n[t] > 0 then
      local S, w = STRIDE[t], WIDTH[t]
      local col = redis.call('GETRANGE', tkey(t), 0, n[t] * S - 1)
      for s = 0, n[t] - 1 do
        redis.call('HINCRBY', A, ipkey(string.sub(col, s * S + 21, s * S + 20 + w)), 1)
      end
    end
  end
  if redis.call('EXISTS', A) == 1 then redis.call('EXPIRE', A, ttl) end
end

-- --- peers ---------------------------------------------------------------------------------

-- The role of pid by its records in the families other than fam: nil, 0 seeder, 1 leecher.
local function other_role(fam, pid)
  for g = 0, 2 do
    if g ~= fam then
      local t = find(g, pid)
      if t then return t % 2 end
    end
  end
  return nil
end

-- The role is the peer's: its records in the other families move to role `to` (0/1).
local function move_others(fam, pid, to)
  for g = 0, 2 do
    if g ~= fam then
      local t, s, rec = find(g, pid)
      if t and t % 2 ~= to then
        cut(t, s, pid)
        append(2 * g + to, pid, rec)
      end
    end
  end
end

-- Forget the record of pid in table t, slot s (its IP count, and the peer if it was its last).
local function forget_record(t, s, pid, rec)
  cut(t, s, pid)
  ip_sub(string.sub(rec, 21, 20 + WIDTH[t]))
  if other_role(math.floor(t / 2), pid) == nil then
    if t % 2 == 0 then c = c - 1 else i = i - 1 end
  end
end

local function owner_ok(old, stored, addr, key)
  if host(old) == host(addr) then return true end
  return key ~= 0 and stored % KEYBITS == key
end

-- A bounded random pool of table t: all of it, or `want` records in runs of RUN spread evenly
-- from a random rotation (each record equally likely to be in it).
local function pool_of(t, want, rnd)
  local cnt = n[t]
  if cnt == 0 then return '' end
  local S, key = STRIDE[t], tkey(t)
  if cnt <= want then return cols[t] or redis.call('GETRANGE', key, 0, cnt * S - 1) end
  local r = math.ceil(want / RUN)
  local base, extra = math.floor(want / r), want % r
  local rot = rnd % cnt
  local parts = {}
  for j = 0, r - 1 do
    local v = (math.floor(j * cnt / r) + rot) % cnt
    local len = base
    if j < extra then len = base + 1 end
    local stop = v + len
    if stop <= cnt then
      parts[#parts + 1] = redis.call('GETRANGE', key, v * S, stop * S - 1)
    else
      parts[#parts + 1] = redis.call('GETRANGE', key, v * S, cnt * S - 1)
      parts[#parts + 1] = redis.call('GETRANGE', key, 0, (stop - cnt) * S - 1)
    end
  end
  return table.concat(parts)
end

-- A registry entry whose swarm keys are gone (expired by TTL): take it out of the totals.
local function forget_entry()
  local v = redis.call('HGET', R, ih)
  if not v then return end
  local t = 0
  for num in string.gmatch(v, '%d+') do
    if num ~= '0' then redis.call('HINCRBY', N, t, -tonumber(num)) end
    t = t + 1
  end
  redis.call('HINCRBY', N, 's', -1)
  redis.call('HDEL', R, ih)
end

local function delete_swarm()
  for t = 0, 5 do
    if n[t] > 0 then redis.call('HINCRBY', N, t, -n[t]) end
  end
  redis.call('DEL', M, A, I, tkey(0), tkey(1), tkey(2), tkey(3), tkey(4), tkey(5))
  redis.call('HINCRBY', N, 's', -1)
  redis.call('HDEL', R, ih)
end

-- --- operations ----------------------------------------------------------------------------

local function announce(args)
  local pid, addr = args[2], args[3]
  local now, key, hold, ttl, pool, cap, proto, seeder, completed, create, rnd =
    struct.unpack('<I4I4I4I4I4BBBBBI4', args[4])
  local w = #addr
  local fam = FAM[w]
  local ts, tl = 2 * fam, 2 * fam + 1
  local created = 0
  if not load_meta() then
    if create == 0 then return {3} end
    created = 1
    forget_entry()
    -- Keys that outlived the meta hash (their TTL is renewed up to a minute apart) are leftovers.
    redis.call('DEL', A, I, tkey(0), tkey(1), tkey(2), tkey(3), tkey(4), tkey(5))
    fresh_meta()
  end
  local t, s, rec = find(fam, pid)
  local target = tl
  if seeder == 1 then target = ts end
  local updated, counted, changed = 1, 0, false
  local own = t
  if t then
    local old = string.sub(rec, 21, 20 + w)
    local seen, stored = struct.unpack('<I4I4', rec, 21 + w)
    if old ~= addr and not owner_ok(old, stored, addr, key) then return {1} end
    if hold > 0 and now - seen < hold then
      updated = 0
    else
      if old ~= addr and ipkey(old) ~= ipkey(addr) then
        ip_sub(old)
        ip_add(addr, false)
      end
      local nkey = key
      if proto > 0 then nkey = key + KEYBITS * union(math.floor(stored / KEYBITS), proto) end
      local tail = addr .. struct.pack('<I4I4', now, nkey)
      if target == t then
        -- cols[t] (if find read it) keeps this record's old tail for pool_of: only the
        -- announcer's own record, which the view never hands out, so no second read of t.
        redis.call('SETRANGE', tkey(t), s * STRIDE[t] + 20, tail)
      else
        cut(t, s, pid)
        append(target, pid, pid .. tail)
        move_others(fam, pid, target - ts)
        if seeder == 1 then
          counted = 1
          d, c, i = d + 1, c + 1, i - 1
        else
          c, i = c - 1, i + 1
        end
        changed = true
      end
      own = target
    end
  else
    if cap > 0 then
      ensure_ip_counts(ttl)
      local have = redis.call('HGET', A, ipkey(addr))
      if have and tonumber(have) >= cap then return {2, cap} end
    end
    local role = other_role(fam, pid)
    append(target, pid, pid .. addr .. struct.pack('<I4I4', now, key + KEYBITS * proto))
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
    maintain_index()
    save_meta()
    if created == 1 then redis.call('HINCRBY', N, 's', 1) end
  end
  if created == 1 or not e or now - e >= STEP or now < e then
    refresh(ttl, now)
  elseif changed then
    refresh_fresh(ttl)
  end
  return {0, c, i, d, n[ts], n[tl], own - ts, counted, updated, created,
    pool_of(ts, pool + 1, rnd), pool_of(tl, pool + 1, math.floor(rnd / 7))}
end

local function remove(args)
  local pid, addr = args[2], args[3]
  local key = struct.unpack('<I4', args[4])
  if not load_meta() then return {0, 0, 0, 0} end
  local fam = FAM[#addr]
  local t, s, rec = find(fam, pid)
  if not t then return {0, c, i, d} end
  local w = #addr
  local _, stored = struct.unpack('<I4I4', rec, 21 + w)
  if not owner_ok(string.sub(rec, 21, 20 + w), stored, addr, key) then return {1} end
  forget_record(t, s, pid, rec)
  maintain_index()
  -- An emptied swarm keeps its downloaded count until the sweep drops it (as in memory).
  save_meta()
  return {0, c, i, d}
end

-- Examine at most `budget` records from cursor (table ct, slots below chi), downwards so that
-- moving a table's last record into a hole never skips one; returns removed, next cursor.
local function sweep(args)
  local cutoff, budget, ct, chi = struct.unpack('<I4I4I4I4', args[2])
  if not load_meta() then
    forget_entry()
    return {0, 6, 0}
  end
  local removed = 0
  while ct <= 5 and budget > 0 do
    local hi = math.min(chi, n[ct])
    if hi == 0 then
      ct, chi = ct + 1, 4294967295
    else
      local lo = math.max(0, hi - budget)
      local S, w = STRIDE[ct], WIDTH[ct]
      local chunk = redis.call('GETRANGE', tkey(ct), lo * S, hi * S - 1)
      for s = hi - 1, lo, -1 do
        local o = (s - lo) * S
        if struct.unpack('<I4', chunk, o + 21 + w) < cutoff then
          forget_record(ct, s, string.sub(chunk, o + 1, o + 20), string.sub(chunk, o + 1, o + S))
          removed = removed + 1
        end
      end
      budget = budget - (hi - lo)
      chi = lo
      if lo == 0 then ct, chi = ct + 1, 4294967295 end
    end
  end
  if total() == 0 then
    delete_swarm()
    return {removed, 6, 0}
  end
  if removed > 0 then
    maintain_index()
    save_meta()
  end
  return {removed, ct, chi}
end

local function drop(args)
  if not load_meta() then
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
  -- The bucket counters of every slot one Cluster node serves, named in args (declared keys
  -- must share one slot; undeclared ones may span the node's slots with this flag).
  callback = function(_, args)
    local out = {0, 0, 0, 0, 0, 0, 0}
    for _, k in ipairs(args) do
      local v = redis.call('HMGET', k, 's', '0', '1', '2', '3', '4', '5')
      for j = 1, 7 do out[j] = out[j] + (tonumber(v[j]) or 0) end
    end
    return out
  end,
}
