"""The well-known development account (like Azurite's devstoreaccount1), in a module of its own: the `kiln`
client commands default to it without importing the server. Override with KILN_ACCOUNT_NAME / KILN_ACCOUNT_KEY."""

DEV_ACCOUNT_NAME = "kilndev"
DEV_ACCOUNT_KEY = "a2lsbi1kZXZlbG9wbWVudC1hY2NvdW50LWtleS1ub3Qtc2VjcmV0LTAwMDAwMDAwMDA="
