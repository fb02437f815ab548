// scanfleet lab: one page served by Pike's HTTP server module (Protocols.HTTP.Server), which sends its own
// "Server: Pike v8.0 release 1738: HTTP Server module" header (module.pmod: http_serverid).
// usage: pike8.0 pike-httpd.pike ADDRESS PORT
int main(int argc, array(string) argv)
{
  Protocols.HTTP.Server.Port(answer, (int)argv[2], argv[1]);
  return -1;
}

void answer(Protocols.HTTP.Server.Request request)
{
  request->response_and_finish((["data": "<html><body>scanfleet lab</body></html>\n", "type": "text/html"]));
}
