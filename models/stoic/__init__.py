"""STOIC2021 members and their ensemble (thesis chapter 4)."""
