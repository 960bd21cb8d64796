-- Synthesis jobs: every /speak call (inline or async) and every OpenAI-compatible speech call
-- writes one (scaispeak.md §4.2, §5, §6.1). The row is the truth; the arq queue carries ids.
CREATE TABLE synth_jobs (
  id                 text PRIMARY KEY,                -- job_<ulid>
  tenant_id          text NOT NULL,
  user_id            text NOT NULL,
  partner_id         text NULL,
  api_key_id         text NULL,
  mode               text NOT NULL CHECK (mode IN ('inline','async')),
  source             text NOT NULL CHECK (source IN ('speak','openai')),
  status             text NOT NULL CHECK (status IN ('queued','running','completed','failed')),
  status_reason      text NULL,
  error              jsonb NULL,                      -- {code, message} when failed
  voice_id           text NOT NULL,
  chars              integer NOT NULL CHECK (chars >= 0),
  params             jsonb NOT NULL DEFAULT '{}'::jsonb,  -- merged synthesis parameters
  backend_preference text NOT NULL DEFAULT 'any',
  response_format    text NOT NULL,
  sample_rate        integer NOT NULL,
  text_key           text NULL,                       -- S3 scaispeak/synth_jobs/{id}.txt (async)
  output_key         text NULL,                       -- S3 scaispeak/synth_jobs/{id}.{ext}
  output_bytes       bigint NULL,
  saved_to           jsonb NULL,                      -- §9.5; never holds a token
  backend_used       text NULL CHECK (backend_used IN ('A','B')),
  node_id            text NULL,
  audio_duration_ms  bigint NULL,
  attempts           integer NOT NULL DEFAULT 0,
  worker_id          text NULL,
  lease_expires_at   timestamptz NULL,
  request_id         text NOT NULL,
  created_at         timestamptz NOT NULL DEFAULT now(),
  started_at         timestamptz NULL,
  completed_at       timestamptz NULL
);
CREATE INDEX synth_jobs_owner_idx ON synth_jobs (tenant_id, user_id, created_at DESC, id DESC);
CREATE INDEX synth_jobs_tenant_time_idx ON synth_jobs (tenant_id, created_at DESC, id DESC);
CREATE INDEX synth_jobs_status_idx ON synth_jobs (status, created_at);
CREATE INDEX synth_jobs_output_idx ON synth_jobs (completed_at) WHERE output_key IS NOT NULL;
