-- Idempotency records once kept the task token and callback secret in clear
-- ("task|fingerprint|token|secret"); keep only "task|fingerprint".
UPDATE kv
SET value = substr(value, 1, instr(value, '|') + instr(substr(value, instr(value, '|') + 1), '|') - 1)
WHERE key LIKE 'idem:%'
  AND instr(substr(value, instr(value, '|') + 1), '|') > 0;
