"""What the two Redis backends (redis.py, redis_cluster.py) share below the client.

Owns: the Lua they run (the functions shared by the single-node script and the
Cluster's per-slot scripts, the single-node record and open-session scripts) and
`Script`, which names one by its SHA1; the encoding of TTLs as script arguments
(`ttl_ms`); and reading the event log's streams: the newest entries in pages
(`read_stream_tail`) and an entry's fields back into an `Event` (`decode_event`).
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from ..types import Event

# Lua shared by the single-node script below and the per-slot scripts of the Cluster
# backend (redis_cluster.py): each function touches only the keys it is given.
#
# Purchases and the order of ratings are sorted sets whose score is the key's own
# counter: one more than its highest score, so the newest (or repeated) item ranks
# last whatever the events' timestamps, and ZREMRANGEBYRANK drops the oldest.
# Keys written before profile_max_items (purchases a plain set, ratings without an
# order) are converted on their user's next purchase or rating: their items get
# score 0, the oldest, among themselves in member order.
LUA_FUNCTIONS: Final = """
local function expire(key, ttl)
  if ttl == '0' then redis.call('PERSIST', key) else redis.call('PEXPIRE', key, ttl) end
end
local function zadd_old(key, members)  -- score 0; in chunks, as unpack has a limit
  for i = 1, #members, 500 do
    local args = {}
    for j = i, math.min(i + 499, #members) do
      args[#args + 1] = 0
      args[#args + 1] = members[j]
    end
    redis.call('ZADD', key, unpack(args))
  end
end
local function add_newest(key, member, max, hash)
  local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  redis.call('ZADD', key, (tonumber(top[2]) or 0) + 1, member)
  local extra = redis.call('ZCARD', key) - max
  if extra > 0 then
    if hash then
      local old = redis.call('ZRANGE', key, 0, extra - 1)
      for i = 1, #old, 500 do
        redis.call('HDEL', hash, unpack(old, i, math.min(i + 499, #old)))
      end
    end
    redis.call('ZREMRANGEBYRANK', key, 0, extra - 1)
  end
end
-- log: the stream; max: MAXLEN ~ ('0' = off); id: '*', or an explicit id that falls
-- back to '*' when the stream already holds a greater one
local function append_log(log, max, id, fields)
  local args = {'XADD', log}
  if max ~= '0' then
    args[3], args[4], args[5] = 'MAXLEN', '~', max
  end
  local at = #args + 1
  args[at] = id
  for i = 1, #fields do args[at + i] = fields[i] end
  if id ~= '*' and type(redis.pcall(unpack(args))) == 'string' then return end
  args[at] = '*'
  redis.call(unpack(args))
end
-- s: session hash, items: its list; creates the session (owned by user) when missing
local function apply_session(s, items, item, ts, user, max, ttl)
  if redis.call('HSETNX', s, 'user', user) == 1 then
    redis.call('HSET', s, 'created', ts, 'last_seen', ts)
    redis.call('DEL', items)
  elseif tonumber(ts) > (tonumber(redis.call('HGET', s, 'last_seen')) or 0) then
    redis.call('HSET', s, 'last_seen', ts)
  end
  redis.call('RPUSH', items, item)
  redis.call('LTRIM', items, -tonumber(max), -1)
  expire(s, ttl)
  expire(items, ttl)
end
-- k: counters, recent, purchases, ratings, ratings order (one user's keys)
local function apply_profile(k, action, item, rating, recent_max, profile_max, ttl)
  redis.call('HINCRBY', k[1], action, 1)
  redis.call('RPUSH', k[2], item)
  redis.call('LTRIM', k[2], -tonumber(recent_max), -1)
  local max = tonumber(profile_max)
  if action == 'purchase' then
    if redis.call('TYPE', k[3])['ok'] == 'set' then  -- written before the bound
      local old = redis.call('SMEMBERS', k[3])
      redis.call('DEL', k[3])
      zadd_old(k[3], old)
    end
    add_newest(k[3], item, max, false)
  elseif action == 'rate' and rating ~= '' then
    if redis.call('EXISTS', k[5]) == 0 then  -- none, or ratings from before the bound
      zadd_old(k[5], redis.call('HKEYS', k[4]))
    end
    redis.call('HSET', k[4], item, rating)
    add_newest(k[5], item, max, k[4])
  end
  for i = 1, 5 do expire(k[i], ttl) end
end
"""

# KEYS: dedup, log, session hash, session items, counters, recent, purchases,
#       ratings, ratings order
# ARGV: dedup_ttl_ms, log_max (0 = off), session_max, session_ttl_ms (0 = never),
#       recent_max, profile_ttl_ms (0 = never), id, session_id, action, item_id, ts,
#       user_id ('' = anonymous), rating ('' = none), profile_max, origin
RECORD_LUA: Final = (
    LUA_FUNCTIONS
    + """
if not redis.call('SET', KEYS[1], ARGV[11], 'NX', 'PX', ARGV[1]) then return 0 end
append_log(KEYS[2], ARGV[2], '*', {'id', ARGV[7], 'session_id', ARGV[8], 'action', ARGV[9],
           'item_id', ARGV[10], 'ts', ARGV[11], 'user_id', ARGV[12], 'rating', ARGV[13],
           'origin', ARGV[15]})
apply_session(KEYS[3], KEYS[4], ARGV[10], ARGV[11], ARGV[12], ARGV[3], ARGV[4])
if ARGV[12] ~= '' then
  apply_profile({KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]}, ARGV[9], ARGV[10], ARGV[13],
                ARGV[5], ARGV[14], ARGV[6])
end
return 1
"""
)

# KEYS: session hash, session items.  ARGV: user_id ('' = anonymous), now, session_ttl_ms
# Returns {existed, owner, created, last_seen, items}.
OPEN_SESSION_LUA: Final = """
local function expire(ttl)
  for i = 1, 2 do
    if ttl == '0' then redis.call('PERSIST', KEYS[i]) else redis.call('PEXPIRE', KEYS[i], ttl) end
  end
end
local existed = 1
if redis.call('HSETNX', KEYS[1], 'user', ARGV[1]) == 1 then
  existed = 0
  redis.call('HSET', KEYS[1], 'created', ARGV[2], 'last_seen', ARGV[2])
  redis.call('DEL', KEYS[2])
  expire(ARGV[3])
else
  local owner = redis.call('HGET', KEYS[1], 'user')
  if owner == '' and ARGV[1] ~= '' then  -- the first signed-in visit claims it
    redis.call('HSET', KEYS[1], 'user', ARGV[1])
    owner = ARGV[1]
  end
  if owner == ARGV[1] then
    if tonumber(ARGV[2]) > (tonumber(redis.call('HGET', KEYS[1], 'last_seen')) or 0) then
      redis.call('HSET', KEYS[1], 'last_seen', ARGV[2])
    end
    expire(ARGV[3])
  end
end
local h = redis.call('HMGET', KEYS[1], 'user', 'created', 'last_seen')
return {existed, h[1] or '', h[2] or '0', h[3] or '0', redis.call('LRANGE', KEYS[2], 0, -1)}
"""


class Script:
    """A Lua script's text and the SHA1 that EVALSHA calls it by."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()


TAIL_PAGE = 5000  # stream entries per XREVRANGE: one call for 100k would outlast the timeout


async def read_stream_tail(client: Any, key: str, limit: int) -> list[Any]:
    """The newest `limit` entries of stream `key`, oldest first, read newest-first in
    pages of TAIL_PAGE (each page's upper bound exclusive of the last id read), so a
    warm-up of many events is many short commands, not one the socket timeout cuts."""
    pages: list[Any] = []
    upper, left = "+", limit
    while left > 0:
        page: Any = await client.xrevrange(key, upper, "-", count=min(left, TAIL_PAGE))
        if not page:
            break
        pages.append(page)
        left -= len(page)
        last = page[-1][0]
        upper = "(" + (last.decode() if isinstance(last, bytes) else str(last))
        if len(page) < TAIL_PAGE:
            break
    return [entry for page in reversed(pages) for entry in reversed(page)]


def ttl_ms(seconds: float | None) -> str:
    """A TTL as Lua script argument: milliseconds, at least 1; '0' means never expire."""
    return "0" if seconds is None else str(max(1, round(seconds * 1000)))


def decode_event(fields: dict[str, str]) -> Event:
    """An event of the log from its stream entry's fields."""
    return Event(
        id=fields["id"],
        session_id=fields["session_id"],
        action=fields["action"],
        item_id=fields["item_id"],
        ts=float(fields["ts"]),
        user_id=fields.get("user_id") or None,
        rating=float(fields["rating"]) if fields.get("rating") else None,
    )
