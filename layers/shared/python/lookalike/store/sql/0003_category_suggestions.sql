-- Lookalike schema, step 3: suggested categories of images uploaded without one.
--
-- One row per uncategorised embedded image: the vote of its nearest categorised neighbours
-- (lookalike.suggestions) by one model's vectors, written by the ingest after the image itself.
-- A stored category is never touched by a suggestion; an image that gets a category loses its
-- suggestion (the ingest deletes it), and the listing only shows images without a category.
CREATE TABLE category_suggestions (
    image_id    bigint      PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
    model_id    integer     NOT NULL REFERENCES models (id),
    category    text        NOT NULL,
    confidence  real        NOT NULL CHECK (confidence >= 0 AND confidence <= 1),
    -- Every voted category, best first: [{"category": ..., "confidence": ...}, ...].
    ranked      jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The review listing: uncategorised embedded images in (bucket, key) byte order, a page at a time.
CREATE INDEX images_uncategorised ON images (bucket COLLATE "C", key COLLATE "C")
    WHERE status = 'embedded' AND category IS NULL;
