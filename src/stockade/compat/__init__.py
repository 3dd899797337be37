"""Front ends that speak other sandbox services' protocols, as thin adapters over the engine."""
