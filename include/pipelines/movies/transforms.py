"""The movies marts, written once with narwhals for every engine (Dask, Spark, pandas in tests).

Inputs are the typed tables (renamed columns): ``ratings`` (``user_id, movie_id, rating,
rated_at``), ``links`` (``movie_id, imdb_id, tmdb_id``) and the keywords with one row per
keyword (``tmdb_id, keywords_id, keywords_name``: the platform explodes the nested column). Row
counts are sums of a column of ones and means are sums over counts (narwhals' Dask group-by
takes simple one-column aggregations); integers are never cast (nulls would not survive on Dask).
"""

from __future__ import annotations

import narwhals as nw

M = 10  # weighted_rating's prior weight, in ratings
MOVIE_COLUMNS = ("movie_id", "imdb_id", "tmdb_id", "n_ratings", "mean_rating", "weighted_rating", "first_rated",
                 "last_rated")
KEYWORD_COLUMNS = ("keyword_id", "keyword", "n_movies", "n_ratings", "mean_rating")
YEAR_COLUMNS = ("year", "n_ratings", "n_users", "mean_rating")


def _per_movie(ratings: nw.LazyFrame) -> nw.LazyFrame:
    """``movie_id, n_ratings, rating_sum, first_rated, last_rated`` of every rated movie."""
    return (
        ratings.with_columns(_one=nw.lit(1, nw.Int64))
        .group_by("movie_id")
        .agg(
            nw.col("_one").sum().alias("n_ratings"),
            nw.col("rating").sum().alias("rating_sum"),
            nw.col("rated_at").min().alias("first_rated"),
            nw.col("rated_at").max().alias("last_rated"),
        )
    )


def movie_ratings(ratings: nw.LazyFrame, links: nw.LazyFrame, c: float) -> nw.LazyFrame:
    """One row per rated movie; ``weighted_rating = (n * mean + M * c) / (n + M)``, ``c`` the mean of
    every accepted rating; ``imdb_id`` is ``tt`` + the 7 digits, null (as ``tmdb_id``) without a link."""
    n, total = nw.col("n_ratings"), nw.col("rating_sum")
    joined = _per_movie(ratings).join(links.select("movie_id", "imdb_id", "tmdb_id"), on="movie_id", how="left")
    return joined.select(
        "movie_id",
        nw.concat_str(nw.lit("tt"), nw.col("imdb_id")).alias("imdb_id"),
        "tmdb_id",
        "n_ratings",
        (total / n.cast(nw.Float64)).alias("mean_rating"),
        ((total + M * c) / (n.cast(nw.Float64) + M)).alias("weighted_rating"),
        "first_rated",
        "last_rated",
    )


def keyword_ratings(ratings: nw.LazyFrame, links: nw.LazyFrame, keywords: nw.LazyFrame) -> nw.LazyFrame:
    """One row per keyword of at least one rated movie (``links.tmdb_id = keywords.tmdb_id``):
    ``n_movies`` distinct rated movies carrying it, ``n_ratings`` their accepted ratings and
    ``mean_rating`` over those ratings. A keyword listed twice for a movie counts once."""
    rated = _per_movie(ratings).join(links.select("movie_id", "tmdb_id"), on="movie_id", how="inner")
    pairs = (
        rated.join(keywords.select("tmdb_id", "keywords_id", "keywords_name"), on="tmdb_id", how="inner")
        .select("movie_id", nw.col("keywords_id").alias("keyword_id"), nw.col("keywords_name").alias("keyword"),
                "n_ratings", "rating_sum")
        .unique(["movie_id", "keyword_id"], keep="any")
        .with_columns(_one=nw.lit(1, nw.Int64))
    )
    per_keyword = pairs.group_by("keyword_id", "keyword").agg(
        nw.col("_one").sum().alias("n_movies"), nw.col("n_ratings").sum(), nw.col("rating_sum").sum()
    )
    return per_keyword.select(
        "keyword_id", "keyword", "n_movies", "n_ratings",
        (nw.col("rating_sum") / nw.col("n_ratings").cast(nw.Float64)).alias("mean_rating"),
    )


def ratings_by_year(ratings: nw.LazyFrame) -> nw.LazyFrame:
    """Per UTC year of ``rated_at``: ``n_ratings``, ``n_users`` (distinct) and ``mean_rating``."""
    per_user = (
        ratings.with_columns(year=nw.col("rated_at").dt.year().cast(nw.Int64), _one=nw.lit(1, nw.Int64))
        .group_by("year", "user_id")
        .agg(nw.col("_one").sum().alias("n_ratings"), nw.col("rating").sum().alias("rating_sum"))
        .with_columns(_user=nw.lit(1, nw.Int64))
    )
    per_year = per_user.group_by("year").agg(
        nw.col("n_ratings").sum(), nw.col("_user").sum().alias("n_users"), nw.col("rating_sum").sum()
    )
    return per_year.select(
        "year", "n_ratings", "n_users",
        (nw.col("rating_sum") / nw.col("n_ratings").cast(nw.Float64)).alias("mean_rating"),
    )
