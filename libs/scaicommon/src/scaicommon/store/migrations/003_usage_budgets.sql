CREATE TABLE usage_records (
  id               text PRIMARY KEY,
  created_at       timestamptz NOT NULL DEFAULT now(),
  tenant_id        text NOT NULL,
  partner_id       text NULL,
  user_id          text NOT NULL,
  api_key_id       text NULL,
  operation        text NOT NULL,
  backend          text NOT NULL CHECK (backend IN ('A','B')),
  node_id          text NULL,
  engine           text NULL,
  unit             text NOT NULL CHECK (unit IN ('audio_ms','chars')),
  units            bigint NOT NULL CHECK (units >= 0),
  output_audio_ms  bigint NULL,
  cost             numeric(18,6) NOT NULL DEFAULT 0,
  latency_ms       integer NULL,
  status           text NOT NULL CHECK (status IN ('success','failure')),
  error_code       text NULL,
  request_id       text NOT NULL,
  job_id           text NULL,
  session_id       text NULL
);
CREATE INDEX usage_tenant_time_idx ON usage_records (tenant_id, created_at DESC);
CREATE INDEX usage_tenant_user_time_idx ON usage_records (tenant_id, user_id, created_at DESC);

CREATE TABLE budgets (
  id          text PRIMARY KEY,
  tenant_id   text NOT NULL,
  user_id     text NULL,
  period      text NOT NULL CHECK (period IN ('day','month')),
  unit        text NOT NULL CHECK (unit IN ('audio_ms','chars','cost')),
  amount      numeric(20,6) NOT NULL CHECK (amount >= 0),
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  updated_by  text NOT NULL
);
CREATE UNIQUE INDEX budgets_scope_uniq ON budgets (tenant_id, COALESCE(user_id, ''), period, unit);
