"""The annotation store (SQLite) and its plain records; nothing here knows Gradio."""

from .errors import CommitUnknown, ConflictError, DatabaseBusy, OutcomeUnknown, StoreError, os_error_message
from .models import ModelRecord, model_name_problem
from .masks import decode_mask, encode_mask, mask_bbox, rle_problem
from .names import safe_file_name, unique_names
from .records import Event, ImageRecord, InstanceRecord, RefRecord, RefRow, Snapshot
from .schema import SCHEMA_VERSION
from .refs import DEFAULT_CATEGORY, MAX_SENTENCE_CHARS, MAX_SENTENCES, SPLITS, clean_sentences
from .status import STATUSES, RefAction, RefStatus, next_status, ref_status, save_action
from .filters import ImageFilter, RefFilter
from .store import Store, image_digest

__all__ = [
    "CommitUnknown", "ConflictError", "DatabaseBusy", "OutcomeUnknown", "DEFAULT_CATEGORY", "ModelRecord", "model_name_problem", "Event", "ImageRecord", "InstanceRecord", "MAX_SENTENCES", "MAX_SENTENCE_CHARS",
    "ImageFilter", "RefAction", "RefFilter", "RefStatus", "next_status", "ref_status", "save_action",
    "RefRecord", "RefRow", "SCHEMA_VERSION", "SPLITS", "STATUSES", "Snapshot", "Store", "StoreError", "clean_sentences",
    "decode_mask", "encode_mask", "image_digest", "mask_bbox", "os_error_message", "rle_problem", "safe_file_name",
    "unique_names",
]
