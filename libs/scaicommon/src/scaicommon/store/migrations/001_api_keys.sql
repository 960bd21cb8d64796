CREATE TABLE api_keys (
  id                  text PRIMARY KEY,
  key_hash            char(64) NOT NULL UNIQUE,
  key_prefix          text NOT NULL,
  key_last4           text NOT NULL,
  name                text NOT NULL DEFAULT '',
  tenant_id           text NOT NULL,
  partner_id          text NULL,
  user_id             text NOT NULL,
  roles               text[] NOT NULL DEFAULT '{}',
  module_permissions  text[] NOT NULL DEFAULT '{}',
  created_at          timestamptz NOT NULL DEFAULT now(),
  created_by          text NOT NULL,
  expires_at          timestamptz NULL,
  revoked_at          timestamptz NULL,
  last_used_at        timestamptz NULL
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id, created_at DESC);
