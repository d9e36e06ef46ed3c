"""Data: record types, loaders for every source, the culture set, the prompt registry and prep-rejected."""

from interp_steer.data.culture import (
    COUNTRY_NAMES,
    DCL_COUNTRIES,
    FORBIDDEN_TERMS,
    find_terms,
    names_country,
    read_culture_rows,
    validate_culture,
)
from interp_steer.data.loaders import (
    culture_preferences,
    export_culture_as_dcl,
    format_mcq,
    format_option,
    load_bipo_ab,
    load_bipo_csv,
    load_culture,
    load_deep_culture_lense,
    load_hh_rlhf,
    load_mwe,
    load_preferences,
    parse_mwe_question,
    read_table,
    write_table,
)
from interp_steer.data.registry import DATASETS, DatasetSpec, dataset_fingerprint, load_prompts
from interp_steer.data.rejected import add_prep_rejected_parser, load_prep_input, prep_rejected
from interp_steer.data.schemas import MCQItem, PreferenceExample

__all__ = [
    "COUNTRY_NAMES", "DATASETS", "DCL_COUNTRIES", "FORBIDDEN_TERMS", "DatasetSpec", "MCQItem",
    "PreferenceExample", "add_prep_rejected_parser", "culture_preferences", "dataset_fingerprint",
    "export_culture_as_dcl", "find_terms", "format_mcq", "format_option", "load_bipo_ab", "load_bipo_csv",
    "load_culture", "load_deep_culture_lense", "load_hh_rlhf", "load_mwe", "load_preferences",
    "load_prep_input", "load_prompts", "names_country", "parse_mwe_question", "prep_rejected",
    "read_culture_rows", "read_table", "validate_culture", "write_table",
]
