CREATE TABLE tenant_policy (
  tenant_id         text PRIMARY KEY,
  allowed_backends  text NOT NULL CHECK (allowed_backends IN ('A','B','AB','BA')),
  default_backend   text NOT NULL CHECK (default_backend IN ('A','B')),
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now(),
  updated_by        text NULL,
  CHECK (strpos(allowed_backends, default_backend) > 0)
);
