//! KiloClaw router component.
