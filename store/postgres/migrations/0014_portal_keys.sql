-- Keys behind tenant portal links are marked: they may not mint links.
ALTER TABLE api_keys ADD COLUMN portal BOOLEAN NOT NULL DEFAULT false;
