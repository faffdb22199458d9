-- Lookalike schema, step 2: embeddings per model version, and the model registry.
--
-- Vectors move out of `images` into `embeddings` (one row per image and model), so that two
-- models (e.g. the active one and one being back-filled) can be held side by side and a query
-- searches the vectors of exactly one model. The column is an untyped halfvec: models may have
-- different dimensions; each model has its own partial HNSW index on (embedding::halfvec(D))
-- WHERE model_id = N, created by the registry (lookalike.store.registry) when a model is added.

CREATE TABLE models (
    id            integer     GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The embedder's model_version: "<card model_version>/<variant>/<resize_mode>".
    version       text        NOT NULL UNIQUE,
    -- pgvector indexes halfvec with HNSW up to 4000 dimensions.
    dimension     integer     NOT NULL CHECK (dimension BETWEEN 1 AND 4000),
    card_sha256   text,
    card          jsonb,
    state         text        NOT NULL CHECK (state IN ('building', 'active', 'standby', 'retired')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    activated_at  timestamptz,
    -- When it last stopped being the active model: rollback() picks the most recent one.
    deactivated_at timestamptz,
    retired_at    timestamptz
);
-- Exactly one active model at most: every query searches the vectors of that one.
CREATE UNIQUE INDEX models_one_active ON models ((true)) WHERE state = 'active';

-- A compact key for the embeddings table (bucket + key can be long).
ALTER TABLE images ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY;
ALTER TABLE images ADD CONSTRAINT images_id_unique UNIQUE (id);

CREATE TABLE embeddings (
    model_id  integer NOT NULL REFERENCES models (id),
    image_id  bigint  NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    embedding halfvec NOT NULL,
    PRIMARY KEY (model_id, image_id)
);
-- As for images.embedding in step 1: keep the vector in the heap page, not in TOAST
-- (docs/BENCHMARKS.md, "Storage").
ALTER TABLE embeddings ALTER COLUMN embedding SET STORAGE PLAIN;
ALTER TABLE embeddings SET (parallel_workers = 2);
-- Replacing or deleting one image's vectors (every write of the ingest path).
CREATE INDEX embeddings_image ON embeddings (image_id);

-- One model per version found in the rows; the most used one becomes the active model, the others
-- are 'building' (a backfill was under way): they can be completed, activated or retired.
INSERT INTO models (version, dimension, state, activated_at)
SELECT model_version, 1280,
       CASE WHEN rank = 1 THEN 'active' ELSE 'building' END,
       CASE WHEN rank = 1 THEN now() END
FROM (
    SELECT model_version, row_number() OVER (ORDER BY count(*) DESC, model_version) AS rank
    FROM images
    WHERE status = 'embedded'
    GROUP BY model_version
) AS versions;

INSERT INTO embeddings (model_id, image_id, embedding)
SELECT models.id, images.id, images.embedding
FROM images JOIN models ON models.version = images.model_version
WHERE images.status = 'embedded';

-- The same parameters as step 1's index (docs/BENCHMARKS.md, "Recall vs ef_search").
DO $$
DECLARE
    model record;
BEGIN
    FOR model IN SELECT id, dimension FROM models ORDER BY id LOOP
        EXECUTE format(
            'CREATE INDEX %I ON embeddings USING hnsw ((embedding::halfvec(%s)) halfvec_cosine_ops) '
            'WITH (m = 16, ef_construction = 64) WHERE model_id = %s',
            'embeddings_hnsw_' || model.id, model.dimension, model.id);
    END LOOP;
END
$$;

DROP INDEX images_embedding_hnsw;
DROP INDEX images_model_version;
ALTER TABLE images
    DROP CONSTRAINT images_embedding_iff_embedded,
    DROP CONSTRAINT images_model_version_if_embedded,
    DROP COLUMN embedding,
    DROP COLUMN model_version;
