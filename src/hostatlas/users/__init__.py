"""Dashboard users: people who sign in (email and an argon2 password hash) and their roles in teams."""
