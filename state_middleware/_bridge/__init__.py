"""The Responses-to-Chat Completions bridge: an app that speaks only Chat Completions
answers Responses turns. The core never imports this package; the middleware hands the
turn pipeline a bridge built from it when ``upstream_api="chat"``."""
