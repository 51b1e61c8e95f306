"""Sources: async streams of bar frames, one file per source kind.

- ``synthetic`` (:class:`~signalmint.sources.synthetic.SyntheticMarket`): a seeded live market with known spikes;
- ``file`` (:class:`~signalmint.sources.file.FileReplay`): replays a CSV or Parquet file;
- ``bokeh_stocks`` (:class:`~signalmint.sources.bokeh_stocks.BokehStocks`): real daily bars of five US stocks;
- ``alpaca`` (:class:`~signalmint.sources.alpaca.AlpacaBars`): live US stock minute bars from Alpaca, with
  the market calendar in :mod:`~signalmint.sources.calendar`.
- ``ccxt`` (:class:`~signalmint.sources.ccxt_candles.CcxtCandles`): live candles of
  any exchange ccxt supports.
- ``rss`` (:class:`~signalmint.sources.rss.Rss`): RSS and Atom feed entries as text rows,
  fetched politely by :mod:`~signalmint.sources.fetch` (conditional GET, per-host rate
  limit, retries with backoff, the SSRF guard).
- ``web_page`` (:class:`~signalmint.sources.web_page.WebPage`): price, availability and a
  watched region's text of shop pages (schema.org data read by :mod:`~signalmint.sources.shop`).
- ``http_json`` (:class:`~signalmint.sources.http_json.HttpJson`): rows of any JSON API,
  mapped by JMESPath, fetched by the same :mod:`~signalmint.sources.fetch` as ``rss``.
- ``evm`` (:class:`~signalmint.sources.evm.EvmChain`): confirmed blocks and ERC-20
  ``Transfer`` logs of an Ethereum-compatible JSON-RPC node, with reorgs retracted.

Every source that reads the network spaces its requests to one host through the process's
:class:`~signalmint.sources.hosts.HostGate`, shared by all automations.

Every source checks its rows with a :class:`~signalmint.sources.validate.RowValidator` and counts the bad
ones in its ``rejected`` mapping instead of raising.

Importing this package imports none of its modules (so importing one module never loads its
siblings and their dependencies: start-up time); the registry loads each source class from
its module (an entry point) only when a config uses it.
"""
