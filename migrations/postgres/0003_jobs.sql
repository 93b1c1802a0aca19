-- Cluster-wide jobs (Postgres): the last start of each periodic job (retention, ...). A node runs a
-- job only when its conditional upsert of the row wins, so one node of the cluster runs it per
-- interval however many start it at once.
CREATE TABLE job_runs (
    name       TEXT    PRIMARY KEY,
    node       TEXT    NOT NULL,
    started_at BIGINT  NOT NULL
);
