-- A tenant's publish rate (events per second per node; 0: no limit), and
-- sources that belong to a tenant ('' is the platform's own).
ALTER TABLE tenants ADD COLUMN publish_rate double precision NOT NULL DEFAULT 0;
ALTER TABLE sources ADD COLUMN tenant text COLLATE "C" NOT NULL DEFAULT '';
