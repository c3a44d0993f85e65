// The real FreeMarker 2.3 engine as the oracle for cohortctl's webhook template renderer.
//
// Usage: java -cp /usr/share/java/freemarker.jar FreemarkerOracle.java CASES.json
// CASES.json: [{"template": "...", "input": <json>}, ...]; prints a JSON array, one entry per
// case: {"ok": true, "output": "..."} or {"ok": false, "error": "..."}.
// The model is the JSON as Java values (objects LinkedHashMap, arrays ArrayList, integers Long,
// other numbers Double), under "input", next to "UtilClass" whose toJsonString(x) writes x as
// compact JSON, the way cohortctl's renderer does.
import freemarker.template.Configuration;
import freemarker.template.Template;
import freemarker.template.TemplateExceptionHandler;
import java.io.StringReader;
import java.io.StringWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

public class FreemarkerOracle {
    public static class Util {
        public String toJsonString(Object value) {
            StringBuilder out = new StringBuilder();
            write(value, out);
            return out.toString();
        }
    }

    static final class Parser {
        final String s;
        int i;

        Parser(String s) { this.s = s; }

        void ws() { while (i < s.length() && Character.isWhitespace(s.charAt(i))) i++; }

        Object value() {
            ws();
            char c = s.charAt(i);
            if (c == '{') {
                i++;
                Map<String, Object> map = new LinkedHashMap<>();
                ws();
                if (s.charAt(i) == '}') { i++; return map; }
                while (true) {
                    ws();
                    String key = string();
                    ws();
                    i++; // ':'
                    map.put(key, value());
                    ws();
                    if (s.charAt(i++) == '}') return map;
                }
            }
            if (c == '[') {
                i++;
                List<Object> list = new ArrayList<>();
                ws();
                if (s.charAt(i) == ']') { i++; return list; }
                while (true) {
                    list.add(value());
                    ws();
                    if (s.charAt(i++) == ']') return list;
                }
            }
            if (c == '"') return string();
            if (s.startsWith("true", i)) { i += 4; return Boolean.TRUE; }
            if (s.startsWith("false", i)) { i += 5; return Boolean.FALSE; }
            if (s.startsWith("null", i)) { i += 4; return null; }
            int start = i;
            while (i < s.length() && "+-0123456789.eE".indexOf(s.charAt(i)) >= 0) i++;
            String num = s.substring(start, i);
            if (num.matches("-?\\d+")) {
                try { return Long.parseLong(num); } catch (NumberFormatException e) { /* big */ }
            }
            return Double.parseDouble(num);
        }

        String string() {
            StringBuilder b = new StringBuilder();
            i++; // opening quote
            while (true) {
                char c = s.charAt(i++);
                if (c == '"') return b.toString();
                if (c != '\\') { b.append(c); continue; }
                char e = s.charAt(i++);
                switch (e) {
                    case 'n': b.append('\n'); break;
                    case 'r': b.append('\r'); break;
                    case 't': b.append('\t'); break;
                    case 'b': b.append('\b'); break;
                    case 'f': b.append('\f'); break;
                    case 'u': b.append((char) Integer.parseInt(s.substring(i, i + 4), 16)); i += 4; break;
                    default: b.append(e);
                }
            }
        }
    }

    static void write(Object v, StringBuilder out) {
        if (v == null) { out.append("null"); return; }
        if (v instanceof Map) {
            out.append('{');
            boolean first = true;
            for (Map.Entry<?, ?> e : ((Map<?, ?>) v).entrySet()) {
                if (!first) out.append(',');
                first = false;
                quote(String.valueOf(e.getKey()), out);
                out.append(':');
                write(e.getValue(), out);
            }
            out.append('}');
        } else if (v instanceof List) {
            out.append('[');
            boolean first = true;
            for (Object item : (List<?>) v) {
                if (!first) out.append(',');
                first = false;
                write(item, out);
            }
            out.append(']');
        } else if (v instanceof String) {
            quote((String) v, out);
        } else {
            out.append(v.toString());
        }
    }

    static void quote(String s, StringBuilder out) {
        out.append('"');
        for (int k = 0; k < s.length(); k++) {
            char c = s.charAt(k);
            if (c == '"') out.append("\\\"");
            else if (c == '\\') out.append("\\\\");
            else if (c == '\n') out.append("\\n");
            else if (c == '\r') out.append("\\r");
            else if (c == '\t') out.append("\\t");
            else if (c == '\b') out.append("\\b");
            else if (c == '\f') out.append("\\f");
            else if (c < 0x20) out.append(String.format("\\u%04x", (int) c));
            else out.append(c);
        }
        out.append('"');
    }

    public static void main(String[] args) throws Exception {
        String text = new String(Files.readAllBytes(Paths.get(args[0])), StandardCharsets.UTF_8);
        List<?> cases = (List<?>) new Parser(text).value();
        Configuration cfg = new Configuration(Configuration.VERSION_2_3_31);
        cfg.setLocale(Locale.US);
        cfg.setDefaultEncoding("UTF-8");
        cfg.setTemplateExceptionHandler(TemplateExceptionHandler.RETHROW_HANDLER);
        cfg.setLogTemplateExceptions(false);
        List<Object> results = new ArrayList<>();
        for (Object item : cases) {
            Map<?, ?> c = (Map<?, ?>) item;
            Map<String, Object> result = new LinkedHashMap<>();
            try {
                Template t = new Template("case", new StringReader((String) c.get("template")), cfg);
                Map<String, Object> root = new LinkedHashMap<>();
                root.put("input", c.get("input"));
                root.put("UtilClass", new Util());
                StringWriter w = new StringWriter();
                t.process(root, w);
                result.put("ok", Boolean.TRUE);
                result.put("output", w.toString());
            } catch (Exception e) {
                result.put("ok", Boolean.FALSE);
                String msg = String.valueOf(e.getMessage());
                result.put("error", msg.length() > 300 ? msg.substring(0, 300) : msg);
            }
            results.add(result);
        }
        StringBuilder out = new StringBuilder();
        write(results, out);
        System.out.write(out.toString().getBytes(StandardCharsets.UTF_8));
        System.out.flush();
    }
}
