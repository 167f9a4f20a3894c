-- The requester's role ids when the job was accepted: their credits shown at delivery follow
-- the same role tier the job was charged under.
ALTER TABLE jobs ADD COLUMN role_ids TEXT NOT NULL DEFAULT '[]';
