"""What speaks to the Catapush API besides sending: users, the token's lifecycle, accounts."""
