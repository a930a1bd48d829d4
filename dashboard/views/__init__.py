"""The dashboard's pages: each module is a script that ``st.navigation`` runs."""
