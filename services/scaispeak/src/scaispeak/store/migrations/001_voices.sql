-- The voice library and the consent records behind cloned voices (scaispeak.md §7, §8).
CREATE TABLE voices (
  id                       text PRIMARY KEY,                 -- voice_<ulid>
  scope                    text NOT NULL CHECK (scope IN ('global','tenant','user')),
  kind                     text NOT NULL CHECK (kind IN ('cloned','designed','global')),
  tenant_id                text NULL,                        -- NULL only for global voices
  owner_user_id            text NULL,
  display_name             text NOT NULL,
  description              text NULL,
  embedding_status         text NOT NULL
                             CHECK (embedding_status IN ('pending','processing','ready','failed','evicted')),
  embedding_status_reason  text NULL,
  language_primary         text NOT NULL,
  language_supported       text[] NOT NULL DEFAULT '{}',
  gender_hint              text NOT NULL DEFAULT 'unspecified'
                             CHECK (gender_hint IN ('female','male','neutral','unspecified')),
  age_hint                 text NOT NULL DEFAULT 'unspecified'
                             CHECK (age_hint IN ('young','adult','middle_aged','senior','unspecified')),
  style_tags               text[] NOT NULL DEFAULT '{}',
  defaults                 jsonb NOT NULL DEFAULT '{}'::jsonb,
  license                  jsonb NULL,                       -- global voices: licensor_name, license_type,
                                                             -- license_expires_at, license_char_cap
  license_chars_used       bigint NOT NULL DEFAULT 0 CHECK (license_chars_used >= 0),
  relay_voice              text NULL,
  voice_design_prompt      text NULL,
  preflight                jsonb NULL,
  reference_key            text NULL,                        -- S3: scaispeak/voices/{id}/reference.wav
  reference_sha256         text NULL,
  reference_text           text NULL,
  consent_id               text NULL,
  request_id               text NOT NULL,
  created_at               timestamptz NOT NULL DEFAULT now(),
  updated_at               timestamptz NOT NULL DEFAULT now(),
  deleted_at               timestamptz NULL,                 -- tombstone (§7.8)
  deleted_by               text NULL,
  CHECK ((scope = 'global') = (tenant_id IS NULL)),
  CHECK (scope = 'global' OR owner_user_id IS NOT NULL)
);
CREATE INDEX voices_tenant_idx ON voices (tenant_id, scope) WHERE deleted_at IS NULL;
CREATE INDEX voices_global_idx ON voices (scope) WHERE scope = 'global' AND deleted_at IS NULL;
CREATE UNIQUE INDEX voices_global_name_uniq
  ON voices (lower(display_name)) WHERE scope = 'global' AND deleted_at IS NULL;

-- One row per cloned voice. Immutable except for the redaction that erasure performs: the
-- personal fields and the audio key may be cleared (once), the hashes never change.
CREATE TABLE consent_records (
  id                      text PRIMARY KEY,                  -- cons_<ulid>
  voice_id                text NOT NULL,
  tenant_id               text NOT NULL,
  created_by              text NOT NULL,
  consent_user_full_name  text NULL,
  consent_text            text NULL,
  consent_stated_purpose  text NULL,
  consent_audio_key       text NULL,                         -- S3: scaispeak/voices/{id}/consent.<ext>
  consent_audio_sha256    text NOT NULL,
  consent_text_sha256     text NOT NULL,
  combined_sha256         text NOT NULL,
  request_id              text NOT NULL,
  created_at              timestamptz NOT NULL DEFAULT now(),
  redacted_at             timestamptz NULL
);
CREATE INDEX consent_records_voice_idx ON consent_records (voice_id);

CREATE FUNCTION consent_records_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    RAISE EXCEPTION 'consent_records rows are never deleted';
  END IF;
  IF NEW.id IS DISTINCT FROM OLD.id OR NEW.voice_id IS DISTINCT FROM OLD.voice_id
     OR NEW.tenant_id IS DISTINCT FROM OLD.tenant_id OR NEW.created_by IS DISTINCT FROM OLD.created_by
     OR NEW.consent_audio_sha256 IS DISTINCT FROM OLD.consent_audio_sha256
     OR NEW.consent_text_sha256 IS DISTINCT FROM OLD.consent_text_sha256
     OR NEW.combined_sha256 IS DISTINCT FROM OLD.combined_sha256
     OR NEW.request_id IS DISTINCT FROM OLD.request_id OR NEW.created_at IS DISTINCT FROM OLD.created_at
     OR OLD.redacted_at IS NOT NULL
     OR NEW.redacted_at IS NULL
     OR NEW.consent_user_full_name IS NOT NULL OR NEW.consent_text IS NOT NULL
     OR NEW.consent_stated_purpose IS NOT NULL OR NEW.consent_audio_key IS NOT NULL THEN
    RAISE EXCEPTION 'consent_records rows are immutable except for one redaction';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER consent_records_immutable
  BEFORE UPDATE OR DELETE ON consent_records
  FOR EACH ROW EXECUTE FUNCTION consent_records_guard();
