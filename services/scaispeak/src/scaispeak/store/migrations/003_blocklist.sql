-- The tenant's text blocklist (scaispeak.md §12.2). Entries are configuration: a delete removes
-- the row; the audit log keeps the scaispeak.blocklist.create/delete history.
CREATE TABLE blocklist_entries (
  id           text PRIMARY KEY,                           -- blk_<ulid>
  tenant_id    text NOT NULL,
  pattern      text NOT NULL CHECK (char_length(pattern) BETWEEN 1 AND 500),
  match        text NOT NULL CHECK (match IN ('substring','regex')),
  description  text NULL,
  created_by   text NOT NULL,
  request_id   text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX blocklist_entries_tenant_idx ON blocklist_entries (tenant_id, created_at DESC, id DESC);
