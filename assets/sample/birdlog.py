"""A small helper module for Nimbus Orbit owners: tallying the birds in FeatherLog exports."""
import csv
from collections import Counter
from datetime import datetime


def read_sightings(path):
    """Read a FeatherLog CSV export and return a list of (time, species) tuples."""
    with open(path, newline="", encoding="utf-8") as f:
        return [(datetime.fromisoformat(r["time"]), r["species"]) for r in csv.DictReader(f)]


def top_species(sightings, n=5):
    """Return the n most frequently seen species with their counts, most common first."""
    return Counter(species for _, species in sightings).most_common(n)


def busiest_hour(sightings):
    """Return the hour of the day (0-23) with the most sightings, or None if there are none."""
    hours = Counter(t.hour for t, _ in sightings)
    return hours.most_common(1)[0][0] if hours else None


def seed_days_left(litres_left, grams_per_day=90, grams_per_litre=600):
    """Estimate how many days the remaining seed will last at the current feeding rate."""
    if grams_per_day <= 0:
        raise ValueError("grams_per_day must be positive")
    return litres_left * grams_per_litre / grams_per_day


class Feeder:
    """A feeder with a seed level that birds eat from and owners refill."""

    capacity = 1.8

    def __init__(self, litres=0.0):
        self.litres = min(litres, self.capacity)

    def refill(self):
        """Fill the hopper to its 1.8 litre capacity and return how much seed was added."""
        added = self.capacity - self.litres
        self.litres = self.capacity
        return added

    def eat(self, litres):
        self.litres = max(0.0, self.litres - litres)
