"""History: the journal projected into SQLite (orders, trades, one-minute candles), served to
allOrders, myTrades, historicalTrades, klines and 24-hour tickers (store.py)."""
