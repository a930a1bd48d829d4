"""The gpufleet dashboard's entry point (``streamlit run dashboard/app.py``): only a router.

The shared filters are drawn here, around every page, so they survive page switches. With sign-in
configured, an anonymous visitor gets the sign-in page and nothing else (``dashboard.auth.gate``)."""

import streamlit as st

from dashboard import auth, data, filters, navigation

st.set_page_config(page_title="gpufleet", page_icon=":material/memory:", layout="wide")
user = auth.gate()
page = st.navigation({
    section: [st.Page(navigation.HERE / p.path, title=p.title, icon=p.icon, url_path=p.url_path, default=p.default)
              for p in pages]
    for section, pages in navigation.SECTIONS.items()
})
auth.user_box(user)
filters.render(data.filter_options(data.store_url()))
page.run()
