CREATE TABLE audit_log (
  id               text PRIMARY KEY,
  created_at       timestamptz NOT NULL DEFAULT now(),
  action           text NOT NULL,
  status           text NOT NULL CHECK (status IN ('SUCCESS','FAILURE')),
  error_code       text NULL,
  http_status      integer NULL,
  actor_id         text NOT NULL,
  actor_type       text NOT NULL CHECK (actor_type IN ('user','service')),
  actor_email      text NULL,
  api_key_id       text NULL,
  service_account  text NULL,
  tenant_id        text NOT NULL,
  partner_id       text NULL,
  resource_type    text NOT NULL,
  resource_id      text NULL,
  request_id       text NOT NULL,
  ip_address       inet NULL,
  user_agent       text NULL,
  details          jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_tenant_time_idx ON audit_log (tenant_id, created_at DESC);

CREATE TABLE erasure_audit (
  id            text PRIMARY KEY,
  created_at    timestamptz NOT NULL DEFAULT now(),
  event         text NOT NULL CHECK (event IN ('requested','artifact_deleted','node_evicted',
                                                'node_evict_failed','completed')),
  tenant_id     text NOT NULL,
  subject_type  text NOT NULL CHECK (subject_type IN ('speaker','voice')),
  subject_id    text NOT NULL,
  actor_id      text NOT NULL,
  actor_type    text NOT NULL CHECK (actor_type IN ('user','service','system')),
  request_id    text NULL,
  node_id       text NULL,
  details       jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX erasure_audit_tenant_time_idx ON erasure_audit (tenant_id, created_at DESC);

CREATE FUNCTION scai_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'table % is append-only', TG_TABLE_NAME USING ERRCODE = '42501';
END $$;

CREATE TRIGGER erasure_audit_no_update_delete BEFORE UPDATE OR DELETE ON erasure_audit
  FOR EACH ROW EXECUTE FUNCTION scai_refuse_change();
CREATE TRIGGER erasure_audit_no_truncate BEFORE TRUNCATE ON erasure_audit
  FOR EACH STATEMENT EXECUTE FUNCTION scai_refuse_change();
CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
  FOR EACH ROW EXECUTE FUNCTION scai_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
  FOR EACH STATEMENT EXECUTE FUNCTION scai_refuse_change();
