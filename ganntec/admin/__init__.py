"""Administration of a running instance: admin users and their tokens (`auth`), the admin HTTP
API's client (`client`) and the `ganntec admin ...` command (`cli`). The admin API itself is
served on its own port (`edge.admin_port`), apart from the trading API."""
