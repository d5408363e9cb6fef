"""The movies inputs' contracts (see README.md here and the data set's own README).

- ``ratings``: one user's rating of one movie; ``rating`` is 0.5 to 5.0 in steps of 0.5 (an
  expression rule), ``timestamp`` Unix seconds (a UTC timestamp ``rated_at``), and a user rates a
  movie once (the key ``userId, movieId``: a second rating is rejected).
- ``links``: a movie's IMDb id (7 digits with leading zeros, kept as text) and TMDB id (empty
  on some rows: null). Lines end in CRLF, which the reader handles.
- ``keywords``: a TMDB id and its keywords, a Python literal list of ``{'id', 'name'}`` dicts
  (read with ``ast.literal_eval``, never ``eval``). Some ids are on two or three identical rows:
  the copies are dropped and counted (``duplicates="drop_exact"``), as they are 2.1 % of the
  file, above the default reject limit; a second row for an id with other keywords is rejected.

Columns are renamed to the lake's snake_case names (``movieId`` -> ``movie_id``).
"""

from __future__ import annotations

from include.etl.contract import Column, Dataset, FileFormat, expression

ONLY_EMPTY_IS_NULL = FileFormat(encoding="utf-8", null_values=("",))

RATINGS = Dataset(
    "ratings",
    (
        Column("userId", "integer", required=True, rename="user_id"),
        Column("movieId", "integer", required=True, rename="movie_id"),
        Column("rating", "float", required=True),
        Column("timestamp", "timestamp", format="unix_s", required=True, rename="rated_at"),
    ),
    format=ONLY_EMPTY_IS_NULL,
    rules=(expression("rating >= 0.5 and rating <= 5.0 and rating * 2 % 1 == 0",
                      name="rating is 0.5 to 5.0 in steps of 0.5"),),
    key=("userId", "movieId"),
    description="one user's rating of one movie (MovieLens 'small')",
)

LINKS = Dataset(
    "links",
    (
        Column("movieId", "integer", required=True, rename="movie_id"),
        Column("imdbId", required=True, rename="imdb_id"),
        Column("tmdbId", "integer", rename="tmdb_id"),
    ),
    format=ONLY_EMPTY_IS_NULL,
    rules=(expression("matches(imdbId, '^[0-9]{7}$')", name="imdbId is 7 digits"),),
    key=("movieId",),
    description="a movie's IMDb id (7 digits, leading zeros) and TMDB id",
)

KEYWORDS = Dataset(
    "keywords",
    (
        Column("id", "integer", required=True, rename="tmdb_id"),
        Column("keywords", "list<struct<id: integer, name: string>>", format="python", required=True),
    ),
    format=ONLY_EMPTY_IS_NULL,
    key=("id",),
    duplicates="drop_exact",
    description="a TMDB movie's keywords, a Python literal list of {'id', 'name'}",
)

DATASETS = {d.name: d for d in (RATINGS, LINKS, KEYWORDS)}
# Default inputs, relative to ETL_DATA_DIR.
INPUTS = {"ratings": "movies/ratings_small.csv", "links": "movies/links.csv", "keywords": "movies/keywords.csv"}
