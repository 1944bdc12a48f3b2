//! Embedded segment log (being written).
