//! Wire formats as checked byte views.
