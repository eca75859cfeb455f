--[[
  Deleting a job by an operator call (after "common", "dedup" and "flows"; needs K.stalled and
  K.waiting_children): remove, clean, drain and obliterate.

  delete_job(id, state, how, hard): the job, already taken out of the structure of `state`,
  loses its hash, lock, logs and stalled mark (transition `how`), its deduplication key is
  released if it owns it, and it is detached from its parent (FLOW.forget); with `hard`
  (BullMQ's hard path) a parent in this queue that waited for it alone is deleted after it
  (DELETE_PARENT, no event), and so on up the tree. Retention trimming (common's trim) keeps
  the soft path and the dedup keys, as BullMQ's.
]]

local function delete_job(id, state, how, hard)
  while id do
    local deid = redis.call('HGET', job_key(id), 'deid')
    local orphan = FLOW.forget(id, hard)
    moved(id, how, state)
    redis.call('DEL', job_key(id), lock_key(id), logs_key(id))
    redis.call('SREM', K.stalled, id)
    if deid then
      dedup_removed(deid, id)
    end
    id, state, how = orphan, 'waiting-children', 'DELETE_PARENT'
  end
end
