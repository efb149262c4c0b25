"""Temporary re-export (reorganisation): the code lives in videomask.difference."""

from videomask.difference.cache import CACHE_FORMAT, CACHE_VERSION, ScoreCache, build_score_cache, stats_fingerprint

__all__ = ["ScoreCache", "build_score_cache", "stats_fingerprint", "CACHE_FORMAT", "CACHE_VERSION"]
