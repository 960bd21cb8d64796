-- Transcription jobs: every inline, async and OpenAI-compatible call writes one (scaiecho.md §5).
CREATE TABLE transcribe_jobs (
  id                 text PRIMARY KEY,                -- job_<ulid>
  tenant_id          text NOT NULL,
  user_id            text NOT NULL,
  partner_id         text NULL,
  api_key_id         text NULL,
  mode               text NOT NULL CHECK (mode IN ('inline','async')),
  source             text NOT NULL CHECK (source IN ('batch','openai')),
  status             text NOT NULL
                       CHECK (status IN ('queued','running','completed','failed','cancelled')),
  status_reason      text NULL,
  options            jsonb NOT NULL DEFAULT '{}'::jsonb,
  audio_key          text NULL,                       -- staged S3 object (async only)
  audio_ext          text NULL,
  audio_sha256       text NULL,
  audio_bytes        bigint NOT NULL CHECK (audio_bytes >= 0),
  declared_duration_ms bigint NULL,
  transcript         text NULL,
  segments           jsonb NULL,
  backend_used       text NULL CHECK (backend_used IN ('A','B')),
  node_id            text NULL,
  language_detected  text NULL,
  audio_duration_ms  bigint NULL,
  attempts           integer NOT NULL DEFAULT 0,
  worker_id          text NULL,
  lease_expires_at   timestamptz NULL,
  request_id         text NOT NULL,
  created_at         timestamptz NOT NULL DEFAULT now(),
  started_at         timestamptz NULL,
  completed_at       timestamptz NULL
);
CREATE INDEX transcribe_jobs_owner_idx
  ON transcribe_jobs (tenant_id, user_id, created_at DESC, id DESC);
CREATE INDEX transcribe_jobs_status_idx ON transcribe_jobs (status, created_at);
CREATE INDEX transcribe_jobs_tenant_time_idx ON transcribe_jobs (tenant_id, created_at DESC);
