-- Roles for a production vault on PostgreSQL: the schema's owner and the service.
--
-- Run as a superuser in the vault's database, once before the first `db upgrade` and
-- again after each one (it is idempotent; the last section re-applies privileges to
-- tables a migration added):
--
--   psql -v ON_ERROR_STOP=1 -d resident_vault -f deploy/postgres/roles.sql
--   psql -d resident_vault -c "ALTER ROLE vault_owner PASSWORD '…'"   -- from your vault
--   psql -d resident_vault -c "ALTER ROLE vault_app PASSWORD '…'"
--
-- vault_owner  owns every table. Migrations (`resident-vault db upgrade`) and partition
--              maintenance (`resident-vault audit partitions ensure|detach`) run as it.
--              Only it can ALTER, DETACH or DROP. Keep its password with the DBA team.
-- vault_app    the service (VAULT_DATABASE_URL of `resident-vault serve`, with
--              VAULT_MIGRATE_ON_START off). It reads and writes the data tables, and may
--              only SELECT and INSERT the audit log: no UPDATE, DELETE or TRUNCATE there
--              (triggers refuse those for every role too), and no DDL anywhere, so a
--              compromised service cannot detach, drop or rewrite a month of the log.
--
-- A read replica inherits all of this; give auditors a role with SELECT only, on it.

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'vault_owner') THEN
    CREATE ROLE vault_owner LOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'vault_app') THEN
    CREATE ROLE vault_app LOGIN;
  END IF;
END $$;

-- PostgreSQL 15 no longer lets every role create in `public`: only the owner does here.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO vault_owner;
GRANT USAGE ON SCHEMA public TO vault_app;

-- Tables the owner creates from now on are usable by the service at once...
ALTER DEFAULT PRIVILEGES FOR ROLE vault_owner IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO vault_app;
ALTER DEFAULT PRIVILEGES FOR ROLE vault_owner IN SCHEMA public
  GRANT USAGE, SELECT ON SEQUENCES TO vault_app;

-- ...and the tables that exist now (re-run after each upgrade):
DO $$
DECLARE
  name text;
BEGIN
  FOR name IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' LOOP
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO vault_app', name);
  END LOOP;
  FOR name IN SELECT sequencename FROM pg_sequences WHERE schemaname = 'public' LOOP
    EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %I TO vault_app', name);
  END LOOP;
  -- The audit log is append-only for the service: take back what the grants above gave,
  -- on its monthly partitions too (the default privileges give new ones UPDATE; their
  -- cloned triggers refuse it, and the next run of this file revokes it).
  FOR name IN SELECT unnest(ARRAY['audit_entries', 'audit_leaves', 'audit_tree_nodes',
                                  'audit_checkpoints', 'audit_archives']) LOOP
    IF to_regclass(name) IS NOT NULL THEN
      EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON %I FROM vault_app', name);
    END IF;
  END LOOP;
  IF to_regclass('audit_entries') IS NOT NULL THEN
    FOR name IN SELECT inhrelid::regclass::text FROM pg_inherits
                WHERE inhparent = 'audit_entries'::regclass LOOP
      EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON %s FROM vault_app', name);
    END LOOP;
  END IF;
END $$;
