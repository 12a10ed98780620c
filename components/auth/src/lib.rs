//! KiloClaw auth component.
