-- Lookalike schema, step 1. Applied once by lookalike.store.migrate() under an advisory lock;
-- later steps go into new numbered files (0002_...) and into store.MIGRATIONS.

CREATE EXTENSION IF NOT EXISTS vector;

-- One row per S3 object (bucket, key): the latest known state of that object. Deleted and
-- rejected objects stay as tombstones: they keep the ordering state (sequencer, event time) so
-- that a late, older event cannot resurrect the object.
CREATE TABLE images (
    bucket        text        NOT NULL,
    key           text        NOT NULL,
    status        text        NOT NULL CHECK (status IN ('embedded', 'deleted', 'rejected')),
    product_id    text,
    category      text,
    etag          text,
    size_bytes    bigint,
    width         integer,
    height        integer,
    -- Normalised by store.normalise_sequencer (upper-case hex right-padded with '0' to 64
    -- characters). Byte order ("C") so that the comparison is S3's, whatever the database locale.
    s3_sequencer  text COLLATE "C",
    event_time    timestamptz NOT NULL,
    model_version text,
    embedding     halfvec(1280),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (bucket, key),
    CONSTRAINT images_embedding_iff_embedded CHECK ((embedding IS NOT NULL) = (status = 'embedded')),
    CONSTRAINT images_product_unless_tombstone CHECK (product_id IS NOT NULL OR status <> 'embedded'),
    CONSTRAINT images_model_version_if_embedded CHECK (model_version IS NOT NULL OR status <> 'embedded')
);

-- A 1280-d halfvec (2.5 kB) is TOASTed by default; the planner then sees a tiny table, and HNSW
-- builds and exact scans are slower (docs/BENCHMARKS.md, "Storage").
-- PLAIN keeps the vector in the heap page (it fits: halfvec(1280) < 8 kB).
ALTER TABLE images ALTER COLUMN embedding SET STORAGE PLAIN;
ALTER TABLE images SET (parallel_workers = 2);

-- m=16 / ef_construction=64: recall and build time at 100k rows in docs/BENCHMARKS.md
-- ("Recall vs ef_search"); larger catalogues need more (docs/SCALING.md).
-- Rows without an embedding (tombstones) are not indexed (HNSW skips NULLs).
CREATE INDEX images_embedding_hnsw ON images
    USING hnsw (embedding halfvec_cosine_ops) WITH (m = 16, ef_construction = 64);

CREATE INDEX images_product ON images (product_id) WHERE status = 'embedded';
-- Serves the exact path of category-filtered searches and the bounded category count.
CREATE INDEX images_category ON images (category) WHERE status = 'embedded';
-- Finds the rows a new model version has to re-embed.
CREATE INDEX images_model_version ON images (model_version);

-- Permanent failures, as a log. A redelivered event adds no row (NULLS NOT DISTINCT: events
-- without a sequencer are deduplicated too).
CREATE TABLE rejections (
    id           bigserial   PRIMARY KEY,
    bucket       text        NOT NULL,
    key          text        NOT NULL,
    s3_sequencer text COLLATE "C",
    event_time   timestamptz NOT NULL,
    reason       text        NOT NULL,
    detail       text        NOT NULL,
    size_bytes   bigint,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT rejections_once_per_event UNIQUE NULLS NOT DISTINCT (bucket, key, reason, s3_sequencer)
);
