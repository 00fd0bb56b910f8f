"""The companion store: records of sensitive subjects, encrypted per subject and erasable.

A care patient's home readings or a citizen's account and posts are stored AES-256-GCM
encrypted under a per-subject data key; data keys are wrapped by a key-encryption key
(:class:`FileKeyWrapper`, or any :class:`KeyWrapper` such as a KMS) and rotated without
touching the data. :meth:`SqlCompanion.export` gives everything about a subject as JSON;
:meth:`SqlCompanion.erase` destroys the subject's data key and records (crypto-shredding)
and logs the erasure, leaving the transparency log verifiable. See README.md for what is
and is not guaranteed.
"""

from __future__ import annotations

from msec.companion.base import (
    ERASURE_LEAF_KIND,
    RECORD_LEAF_KIND,
    Erasure,
    NewRecord,
    StoredRecord,
    data_key_aad,
    erasure_leaf_data,
    record_aad,
    record_leaf_data,
    record_ref,
    split_record_ref,
)
from msec.companion.errors import CompanionError, DuplicateRecord, UnknownRecord, UnknownSubject
from msec.companion.keys import KEY_SIZE, FileKeyWrapper, KeyRing, KeyWrapper
from msec.companion.sql import EXPORT_FORMAT, SqlCompanion
from msec.companion.verify import (
    ErasureLeaves,
    RecordLeaves,
    count_records,
    erased_subjects,
    iter_record_refs,
    leaf_data_for,
    leaf_sources,
)

__all__ = [
    "ERASURE_LEAF_KIND",
    "EXPORT_FORMAT",
    "KEY_SIZE",
    "RECORD_LEAF_KIND",
    "CompanionError",
    "DuplicateRecord",
    "Erasure",
    "ErasureLeaves",
    "FileKeyWrapper",
    "KeyRing",
    "KeyWrapper",
    "NewRecord",
    "RecordLeaves",
    "SqlCompanion",
    "StoredRecord",
    "UnknownRecord",
    "UnknownSubject",
    "count_records",
    "data_key_aad",
    "erased_subjects",
    "erasure_leaf_data",
    "iter_record_refs",
    "leaf_data_for",
    "leaf_sources",
    "record_aad",
    "record_leaf_data",
    "record_ref",
    "split_record_ref",
]
