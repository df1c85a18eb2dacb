"""Your own collections: create, update, search with filters, verify, export, analyse."""

from __future__ import annotations

from inquire.collection.build import create_collection, update_collection
from inquire.collection.filters import Filters, parse_filters
from inquire.collection.ingest import UpdateStats
from inquire.collection.search import CollectionSearcher, SearchRequest, search
from inquire.collection.store import (
    Collection,
    CollectionIndex,
    compact,
    delete_collection,
    list_collections,
    open_collection,
)

__all__ = [
    "Collection",
    "CollectionIndex",
    "CollectionSearcher",
    "Filters",
    "SearchRequest",
    "UpdateStats",
    "compact",
    "create_collection",
    "delete_collection",
    "list_collections",
    "open_collection",
    "parse_filters",
    "search",
    "update_collection",
]
