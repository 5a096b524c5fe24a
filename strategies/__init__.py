"""Server-side aggregation, as Flower Message-API strategies."""
